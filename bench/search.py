"""Our exact Hamming top-k against faiss's flat binary index on the same codes, both sets: on the
CPU set against ``IndexBinaryFlat``, on the GPU set against ``GpuIndexBinaryFlat`` (our search
runs on the CPU in both). Best of ``repeats`` interleaved runs each: a shared machine's noise,
and a first call's warm-up, hit both alike."""

from __future__ import annotations

import time

import numpy as np

from cfrh.codes import pack_codes
from cfrh_search.topk import hamming_topk


def flat_index(bits: int, gpu: bool):
    """faiss's flat binary index, or why there is none: (index, None) or (None, reason)."""
    try:
        import faiss
    except ImportError:
        return None, "faiss not installed (optional: pip install faiss-cpu)"
    if not gpu:
        return faiss.IndexBinaryFlat(bits), None
    if not (hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus()):
        return None, f"faiss {faiss.__version__} sees no GPU (a faiss-gpu build is needed)"
    return faiss.GpuIndexBinaryFlat(faiss.StandardGpuResources(), bits), None


def search(sizes=(184577, 1_000_000), bits_list=(32, 64, 128), n_query=1000, k=50, repeats=3, gpu: bool = False):
    """Hamming top-k queries/s over packed codes, ours vs faiss's flat index where there is one."""
    rng = np.random.default_rng(1)
    rows = []
    hamming_topk(pack_codes(np.ones((1, 8))), pack_codes(np.ones((3, 8))), 8, 2)  # JIT out of the timing
    for n in sizes:
        for bits in bits_list:
            db_bits = rng.random((n, bits)) < 0.5
            q_bits = rng.random((n_query, bits)) < 0.5
            db, q = pack_codes(np.where(db_bits, 1, -1)), pack_codes(np.where(q_bits, 1, -1))
            index, missing = flat_index(bits, gpu)
            if index is not None:
                index.add(np.packbits(db_bits, axis=1))
                q_bytes = np.packbits(q_bits, axis=1)
            ours_s = faiss_s = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                _, dists = hamming_topk(q, db, bits, k)
                ours_s = min(ours_s, time.perf_counter() - t)
                if index is not None:
                    t = time.perf_counter()
                    f_dist, _ = index.search(q_bytes, k)
                    faiss_s = min(faiss_s, time.perf_counter() - t)
            row = {"items": n, "bits": bits, "queries": n_query, "k": k, "repeats": repeats,
                   "ours_queries_per_s": round(n_query / ours_s, 1),
                   "faiss_index": "GpuIndexBinaryFlat" if gpu else "IndexBinaryFlat"}
            if index is not None:
                row.update(faiss_queries_per_s=round(n_query / faiss_s, 1), ratio_ours_to_faiss=round(faiss_s / ours_s, 3),
                           same_distances=bool(np.array_equal(np.sort(f_dist, 1), dists)))
            else:
                row["faiss"] = missing
            rows.append(row)
    return rows
