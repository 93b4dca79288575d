"""``make bench``: speed and memory on the CPU, as ratios against a baseline run in the same
process. Targets are reported beside the figures, never asserted (shared machines are noisy).
Sections:

- stage1 (``stage1.py``): images/s of the whole pipeline (read → resize → encode → Zarr) vs the
  bare encoder forward on the same batches, from JPEG files and from an ``IAll`` array;
- eval: all metrics for 2,000 queries × 184,577 items (NUS scale) vs the lineage's per-query
  ``calculate_top_map`` loop (mAP@50 only) on the same codes, with time and peak memory;
- search (``search.py``): Hamming top-50 queries/s at 184,577 and 1,000,000 items vs faiss
  ``IndexBinaryFlat`` (when faiss-cpu is installed; it is an optional extra, never required);
- ann: approximate binary indexes (faiss IVF, HNSW, multi-index hashing; 2–3 settings each) at
  1 M and 10 M structured 64-bit codes: build time, queries/s and recall@50 against the exact
  top-50, peak memory, beside our exact search and faiss ``IndexBinaryFlat``;
- tune: a 10-trial CFRH study at MIRFlickr scale (default search space, pruning): trials/hour;
- trainer: one epoch of ours vs peer code (per-item DataLoader, dense BoW layer, unfused SGD)
  on the same model function, and the share of the loop alone;
- stage2: one training + evaluation at MIRFlickr scale on synthetic tensors, per bit length;
- shallow: CVH, IMH, CMFH, LSSH fitted and evaluated at MIRFlickr scale, beside LSH.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch
from baselines import calculate_top_map, mirflickr_shaped_cache, peer_style, structured_codes
from search import search
from stage1 import stage1

from cfrh.codes import pack_codes
from cfrh_search import ann
from cfrh_search.topk import hamming_topk
from cfrh_train.config import load
from cfrh_train.methods import build
from cfrh_train.methods.nets import sgd
from cfrh_train.metrics import evaluate
from cfrh_train.train import train
from cfrh_train.tune import tune


def bench_eval(bits_list, n_query=2000, n_db=184577, classes=10):
    rng = np.random.default_rng(0)
    ql = (rng.random((n_query, classes)) < 0.2).astype(np.uint8)
    dl = (rng.random((n_db, classes)) < 0.2).astype(np.uint8)
    rows = []
    evaluate(np.ones((2, 8)), np.ones((3, 8)), ql[:2], dl[:3])  # imports and JIT compilation out of the timing
    for bits in bits_list:
        q = np.where(rng.random((n_query, bits)) < 0.5, -1, 1).astype(np.int8)  # the run folder's codes
        db = np.where(rng.random((n_db, bits)) < 0.5, -1, 1).astype(np.int8)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        t = time.perf_counter()
        ours = evaluate(q, db, ql, dl)
        ours_s = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]  # numpy's allocations; the kernel adds 3 bytes × items per thread
        tracemalloc.stop()
        rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
        qf, dbf = q.astype(np.float32), db.astype(np.float32)  # as the lineage holds them (int8 would overflow)
        t = time.perf_counter()
        ref = calculate_top_map(qf, dbf, ql.astype(np.float32), dl.astype(np.float32), 50)
        ref_s = time.perf_counter() - t
        rows.append({"bits": bits, "ours_all_metrics_s": round(ours_s, 3), "ours_peak_mb": round(peak / 2**20, 1),
                     "peak_rss_growth_mb": round(rss_growth, 1),
                     "lineage_map50_loop_s": round(ref_s, 3), "speedup": round(ref_s / ours_s, 2),
                     "map50_ours": ours["map@50"], "map50_lineage_unstable_ties": ref,
                     "target": "<= 0.5 s and <= 1 GB per direction"})
    return rows


def bench_ann(sizes=(1_000_000, 10_000_000), bits=64, n_query=500, k=50, centres=4000, flip=0.1):
    """Queries/s and recall@50 (by distance: items as near as the exact 50th) of each index."""
    try:
        import faiss
    except ImportError:
        return [{"ann": "faiss-cpu not installed (optional: pip install 'cfrh[ann]')"}]
    hamming_topk(pack_codes(np.ones((1, 8))), pack_codes(np.ones((3, 8))), 8, 2)  # JIT out of the timing
    settings = {"ivf": [{"nprobe": 4}, {"nprobe": 16}, {"nprobe": 64}],
                "hnsw": [{"ef_search": 32}, {"ef_search": 128}],
                "mih": [{"nflip": 1}, {"nflip": 2}]}
    rows = []
    rng = np.random.default_rng(3)
    for n in sizes:
        codes = structured_codes(n + n_query, bits, centres, flip, rng)
        words, q = pack_codes(codes[:n]), pack_codes(codes[n:])
        del codes
        t = time.perf_counter()
        _, exact_d = hamming_topk(q, words, bits, k)
        exact_s = time.perf_counter() - t
        flat = faiss.IndexBinaryFlat(bits)
        flat.add(ann.as_bytes(words))
        t = time.perf_counter()
        flat.search(ann.as_bytes(q), k)
        flat_s = time.perf_counter() - t
        base = {"items": n, "bits": bits, "queries": n_query, "k": k, "centres": centres, "bit_noise": flip,
                "exact_ours_queries_per_s": round(n_query / exact_s, 1),
                "faiss_flat_queries_per_s": round(n_query / flat_s, 1)}
        del flat
        for kind, variants in settings.items():
            params = ann.defaults(kind, n, bits)
            t = time.perf_counter()
            index = ann.build(words, kind, params)
            build_s = time.perf_counter() - t
            for variant in variants:
                ann.configure(index, kind, {**params, **variant})
                t = time.perf_counter()
                ids, dists = ann.search([(0, index)], q, k)
                search_s = time.perf_counter() - t
                hits = np.minimum(k, ((dists <= exact_d[:, -1:]) & (ids >= 0)).sum(1))
                rows.append({**base, "index": kind, "params": {**params, **variant}, "build_s": round(build_s, 1),
                             "queries_per_s": round(n_query / search_s, 1),
                             "recall@50": round(float(hits.mean() / k), 4),
                             "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # the 10 M rows take long
            del index
    return rows


def bench_trainer(n=5000, dim=512, vocab=1386, bits=32, words=10):
    """One CFRH epoch (default config, MIRFlickr shapes) three ways, same model function and loss:
    ours; our loop on peer-style layers (dense BoW product, unfused SGD); and peer code (that,
    fed by a per-item DataLoader). Ratios: whole (peer / ours) and loop only."""
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.normal(size=(n, dim)).astype(np.float32))
    txt = torch.from_numpy((rng.random((n, vocab)) < words / vocab).astype(np.float32))
    config = load("mirflickr", overrides={"bits": bits, "device": "cpu"})

    def epoch(batches, peer: bool):
        torch.manual_seed(0)
        method = build("cfrh", config, dim, vocab)
        if peer:
            method = peer_style(method)
        method.fit(img, txt)
        method.set_epoch(0)
        optimizer = sgd(method.image, method.text, config, fused=not peer)
        t = time.perf_counter()
        for bi, bt in batches():
            terms = method.loss(bi, bt)
            optimizer.zero_grad()
            terms["loss"].backward()
            optimizer.step()
        return time.perf_counter() - t

    bs = config["batch_size"]

    def ours():
        order = torch.randperm(n)
        for s in range(n // bs):
            idx = order[s * bs:(s + 1) * bs]
            yield img[idx], txt[idx]

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return n

        def __getitem__(self, i):
            return img[i].clone(), txt[i].clone()

    def per_item():
        yield from torch.utils.data.DataLoader(Items(), batch_size=bs, shuffle=True, drop_last=True)

    runs = {"ours": lambda: epoch(ours, False), "peer_layers": lambda: epoch(ours, True),
            "peer": lambda: epoch(per_item, True)}
    best = {name: float("inf") for name in runs}
    for _ in range(2):  # alternate, keep the best of each: less noise
        for name, run in runs.items():
            best[name] = min(best[name], run())
    return {"n_train": n, "batch_size": bs, "words_per_text": words, "ours_epoch_s": round(best["ours"], 3),
            "peer_layers_epoch_s": round(best["peer_layers"], 3), "peer_epoch_s": round(best["peer"], 3),
            "speedup": round(best["peer"] / best["ours"], 2),
            "speedup_loop_only": round(best["peer"] / best["peer_layers"], 2)}


def bench_tune(trials: int = 10, n: int = 20015):
    """A study of CFRH at MIRFlickr scale (its default search space, pruning on): trials per hour."""
    with tempfile.TemporaryDirectory() as tmp:
        mirflickr_shaped_cache(Path(tmp), n)
        t = time.perf_counter()
        summary = tune("mirflickr", "cfrh", 32, trials, tmp, Path(tmp) / "runs", seed=0, device="cpu")
        wall = time.perf_counter() - t
    return {"method": "cfrh", "bits": 32, "trials": summary["trials"], "pruned": summary["pruned"],
            "wall_s": round(wall, 1), "trials_per_hour": round(3600 * summary["trials"] / wall, 1),
            "best_val_map": round(summary["best_val_map"], 4), "default_val_map": summary["default_val_map"],
            "target": ">= 30 trials in well under an hour on 2 CPU cores"}


def bench_stage2(bits_list, epochs=None, n: int = 20015):
    """Train + evaluate at MIRFlickr scale (20,015 rows: 5,000 train, 18,015 database, 2,000 queries)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        image, text = mirflickr_shaped_cache(Path(tmp), n)
        # the paper-family default, and a lighter variant (CCAH's 1,024-wide layers, CAGAN's 20 epochs):
        # the FLOPs of an epoch are set by the layer widths, not by our loop
        variants = {"default": {}, "hidden 1024": {"hidden": 1024, "epochs": 20}}
        for (name, variant), bits in ((v, b) for v in variants.items() for b in bits_list):
            overrides = {"bits": bits, "device": "cpu", **variant, **({"epochs": epochs} if epochs else {})}
            config = load("mirflickr", overrides=overrides)
            t = time.perf_counter()
            out = train(config, tmp, "mirflickr", progress=False)
            wall = time.perf_counter() - t
            r = out["result"]
            rows.append({"config": name, "hidden": config["hidden"], "bits": bits, "epochs": config["epochs"],
                         "batch_size": config["batch_size"], "words_per_text": round(float(text.sum(1).mean()), 1),
                         "wall_s": round(wall, 2),
                         "train_s": r["timing"]["train_s"], "eval_s": r["timing"]["eval_s"],
                         "map50_i2t": r["metrics"]["i2t"]["map@50"], "map50_t2i": r["metrics"]["t2i"]["map@50"],
                         "target": "<= 30 s on 2 CPU cores"})
    return rows


def bench_shallow(bits: int = 32, methods=("cvh", "imh", "cmfh", "lssh", "lsh"), n: int = 20015):
    """The shallow baselines at MIRFlickr scale: fit on 5,000 training rows and evaluate, beside LSH."""
    with tempfile.TemporaryDirectory() as tmp:
        mirflickr_shaped_cache(Path(tmp), n)
        rows = []
        for method in methods:
            out = train(load("mirflickr", overrides={"method": method, "bits": bits, "device": "cpu"}), tmp,
                        "mirflickr", progress=False)
            r = out["result"]
            rows.append({"method": method, "bits": bits, "fit_s": r["timing"]["train_s"], "eval_s": r["timing"]["eval_s"],
                         "map50": [r["metrics"][d]["map@50"] for d in ("i2t", "t2i")], "target": "seconds"})
    return rows


def sections(args) -> dict:
    """name → the section at full size, or (``toy``) at the sizes of a few-minute smoke run."""
    bits = [int(b) for b in args.bits.split()]
    train_bits = [int(b) for b in args.train_bits.split()]
    if args.toy:
        return {"eval": lambda: bench_eval(bits[:1], n_query=200, n_db=20000),
                "search": lambda: search(sizes=(20000,), bits_list=(32,), n_query=100),
                "ann": lambda: bench_ann(sizes=(50_000,), n_query=100, centres=200),
                "tune": lambda: bench_tune(trials=2, n=2000),
                "trainer": lambda: bench_trainer(n=1000),
                "stage2": lambda: bench_stage2(train_bits[:1], epochs=2, n=2000),
                "shallow": lambda: bench_shallow(methods=("cvh", "cmfh"), n=2000),
                "stage1": lambda: stage1(["cfrh-tiny-vit"], 120, 60, 64, 32, args.workers or 2, "cpu")}
    return {"eval": lambda: bench_eval(bits),
            "search": search,
            "ann": bench_ann,
            "tune": bench_tune,
            "trainer": bench_trainer,
            "stage2": lambda: bench_stage2(train_bits),
            "shallow": bench_shallow,
            "stage1": lambda: stage1([args.model], args.images or 256, 128, 224, args.batch or 64, args.workers or 2,
                                     "cpu")}
