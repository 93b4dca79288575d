"""Search past what brute force holds: faiss's binary indexes behind the search index's API.

``exact`` is our counting top-k (``hamming_topk``); ``ivf`` is ``IndexBinaryIVF`` (a coarse
Hamming k-means, ``nprobe`` lists searched), ``hnsw`` is ``IndexBinaryHNSW`` (a graph), ``mih``
is ``IndexBinaryMultiHash`` (multi-index hashing: ``nhash`` substrings, exact within radius
``nhash × (nflip + 1) − 1``). Any kind can be split in shards over row ranges, searched one by
one and merged, so a database larger than one process holds can be served shard by shard.
Results come as the exact index gives them: (positions, distances), nearest first, ties by
position. faiss is an optional extra (``pip install 'cfrh[ann]'``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cfrh.errors import ConfigError
from cfrh.fsio import atomic_write

KINDS = ("exact", "ivf", "hnsw", "mih")


def defaults(kind: str, n: int, bits: int) -> dict:
    """Each kind's parameters for ``n`` codes of ``bits`` bits (recorded in index.json)."""
    if kind == "ivf":
        return {"nlist": int(max(1, min(4 * round(np.sqrt(n)), n // 39 or 1))), "nprobe": 16}
    if kind == "hnsw":
        return {"M": 16, "ef_construction": 64, "ef_search": 64}
    if kind == "mih":
        nhash = max(1, bits // 16)
        return {"nhash": nhash, "b": bits // nhash, "nflip": 1}
    return {}


def check_params(kind: str, params: dict) -> None:
    """Every parameter a positive integer the kind has (before any training or building)."""
    if kind not in KINDS:
        raise ConfigError(f"--index {kind!r}: expected one of {', '.join(KINDS)}")
    known = defaults(kind, 1, 64)
    bad = [k for k, v in params.items() if k not in known or not isinstance(v, int) or isinstance(v, bool) or v < 1]
    if bad:
        raise ConfigError(f"--index-param {bad[0]}={params[bad[0]]!r}: expected a positive integer parameter of "
                          f"--index {kind} ({', '.join(known) or 'it has none'})")


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ConfigError("--index ivf|hnsw|mih needs faiss (pip install 'cfrh[ann]'); --index exact does not") from None
    return faiss


def as_bytes(words: np.ndarray) -> np.ndarray:
    """uint64 words (n, w) → the uint8 rows faiss takes (n, 8w); padding bits are 0 on both sides."""
    return np.ascontiguousarray(words).view(np.uint8)


def build(words: np.ndarray, kind: str, params: dict, seed: int = 0):
    """A faiss binary index over ``words`` (one shard)."""
    faiss = _faiss()
    codes = as_bytes(words)
    d = codes.shape[1] * 8
    if kind == "ivf":
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(d), d, params["nlist"])
        index.cp.seed = seed
        index.train(codes)
        index.nprobe = params["nprobe"]
    elif kind == "hnsw":
        index = faiss.IndexBinaryHNSW(d, params["M"])
        index.hnsw.efConstruction = params["ef_construction"]
        index.hnsw.efSearch = params["ef_search"]
    elif kind == "mih":
        index = faiss.IndexBinaryMultiHash(d, params["nhash"], params["b"])
        index.nflip = params["nflip"]
    else:
        raise ConfigError(f"--index {kind!r}: expected one of {', '.join(KINDS)}")
    index.add(codes)
    return index


def configure(index, kind: str, params: dict) -> None:
    """Search-time parameters (a loaded index forgets them)."""
    if kind == "ivf":
        index.nprobe = params["nprobe"]
    elif kind == "hnsw":
        index.hnsw.efSearch = params["ef_search"]
    elif kind == "mih":
        index.nflip = params["nflip"]


def save(index, path: Path) -> None:
    atomic_write(path, lambda tmp: _faiss().write_index_binary(index, str(tmp)))


def load(path: Path, kind: str, params: dict):
    index = _faiss().read_index_binary(str(path))
    configure(index, kind, params)
    return index


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, n, shards + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def search(shards: list[tuple[int, object]], q_words: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Search each (offset, faiss index) shard for the k nearest, merge, nearest first, ties by position."""
    q = as_bytes(np.atleast_2d(q_words))
    found_d, found_i = [], []
    for offset, index in shards:
        d, i = index.search(q, min(k, index.ntotal))
        found_d.append(d)
        found_i.append(np.where(i >= 0, i + offset, -1))
    return merge(np.concatenate(found_i, 1), np.concatenate(found_d, 1), k)


def merge(ids: np.ndarray, dists: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the k smallest (distance, position) pairs of candidate lists (−1: no candidate)."""
    big = np.iinfo(np.int64).max // 4
    keyed = np.where(ids >= 0, dists.astype(np.int64) * (1 << 40) + ids, big)
    order = np.argsort(keyed, axis=1, kind="stable")[:, :k]
    out_i, out_d = np.take_along_axis(ids, order, 1), np.take_along_axis(dists, order, 1)
    return out_i.astype(np.int64), out_d.astype(np.int32)


def range_search(shards: list[tuple[int, object]], q_words: np.ndarray, radius: int) -> list[np.ndarray]:
    """Positions within Hamming distance ``radius`` of each query (MIH: exact when radius <
    nhash × (nflip + 1)), sorted."""
    q = as_bytes(np.atleast_2d(q_words))
    out: list[list[np.ndarray]] = [[] for _ in range(len(q))]
    for offset, index in shards:
        lims, _, ids = index.range_search(q, radius + 1)  # faiss keeps distances < the radius it is given
        for j in range(len(q)):
            out[j].append(ids[lims[j]:lims[j + 1]] + offset)
    return [np.sort(np.concatenate(parts)) for parts in out]
