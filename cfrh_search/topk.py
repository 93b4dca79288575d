"""Hamming top-k search: the k nearest database codes of each query, ties by position, with no
sort and one pass over the codes in tiles shared by blocks of queries, the blocks in parallel."""

from __future__ import annotations

import numba
import numpy as np

from cfrh.hamming import popcount

TILE = 512  # database items per tile: 4 KiB of 64-bit codes, resident in L1 while a block of queries reads it
QUERY_BLOCK = 32  # queries that share each tile


def query_block(nq: int) -> int:
    """Queries per block: up to ``QUERY_BLOCK``, but at least one block per thread."""
    return max(1, min(QUERY_BLOCK, -(-nq // numba.get_num_threads())))


@numba.njit(parallel=True, cache=True)
def topk_scan(q_words, db_words, n_bits, k, block):
    """The k nearest database codes of each query, ties by position, in one pass over the database.

    Blocked for the memory hierarchy: a tile of ``TILE`` codes is copied word-major once and read
    by ``block`` queries in turn, so the database streams from memory once per block of queries,
    not once per query. Per query and tile, one vectorised loop computes the distances and counts
    the ones that could enter the top k; a running threshold ``t`` (an item is kept while its
    distance is below it, or equal while fewer than k kept ones are at most ``t``) makes that
    count zero for almost every tile after the first few, and only a tile with candidates is
    walked item by item. The kept items are placed by a counting sort at the end, exactly as a
    stable sort would order them."""
    nq, n, w = q_words.shape[0], db_words.shape[0], q_words.shape[1]
    nb = n_bits + 1
    ids = np.empty((nq, k), np.int64)
    dists = np.empty((nq, k), np.int32)
    for b in numba.prange((nq + block - 1) // block):
        q0 = b * block
        qn = min(block, nq - q0)
        tile = np.empty((w, TILE), np.uint64)
        dist = np.empty(TILE, np.uint16)
        cap = 4 * k + 64
        buf_i = np.empty((qn, cap), np.int64)  # per query: the kept items and their distances
        buf_d = np.empty((qn, cap), np.int64)
        hist = np.zeros((qn, nb), np.int64)  # distances of the kept items
        size = np.zeros(qn, np.int64)  # kept items
        thr = np.full(qn, nb - 1, np.int64)  # the threshold t
        at_most = np.zeros(qn, np.int64)  # kept items at most t
        for t0 in range(0, n, TILE):
            m = min(TILE, n - t0)
            for x in range(w):
                for j in range(m):
                    tile[x, j] = db_words[t0 + j, x]
            for qi in range(qn):
                q = q0 + qi
                t = thr[qi]
                lim = t if at_most[qi] < k else t - 1  # distances that could still be kept
                if lim < 0:
                    continue
                lim16 = np.uint16(lim)
                for x in range(w - 1):  # codes over 64 bits: all words but the last
                    qx = q_words[q, x]
                    if x == 0:
                        for j in range(m):
                            dist[j] = np.uint16(popcount(qx ^ tile[x, j]))
                    else:
                        for j in range(m):
                            dist[j] += np.uint16(popcount(qx ^ tile[x, j]))
                ql, candidates = q_words[q, w - 1], 0
                if w == 1:
                    for j in range(m):
                        d = np.uint16(popcount(ql ^ tile[0, j]))
                        dist[j] = d
                        candidates += d <= lim16
                else:
                    for j in range(m):
                        d = dist[j] + np.uint16(popcount(ql ^ tile[w - 1, j]))
                        dist[j] = d
                        candidates += d <= lim16
                if candidates == 0:
                    continue
                s, kept = size[qi], at_most[qi]
                for j in range(m):
                    d = np.int64(dist[j])
                    if d > t or (d == t and kept >= k):
                        continue
                    if s == buf_i.shape[1]:  # drop what the threshold has passed; grow if all still count
                        keep = 0
                        for r in range(s):
                            if buf_d[qi, r] <= t:
                                buf_i[qi, keep], buf_d[qi, keep] = buf_i[qi, r], buf_d[qi, r]
                                keep += 1
                        s = keep
                        if s == buf_i.shape[1]:
                            grown_i = np.empty((qn, 2 * s), np.int64)
                            grown_d = np.empty((qn, 2 * s), np.int64)
                            grown_i[:, :s], grown_d[:, :s] = buf_i, buf_d
                            buf_i, buf_d = grown_i, grown_d
                    buf_i[qi, s], buf_d[qi, s] = t0 + j, d
                    s += 1
                    hist[qi, d] += 1
                    kept += 1
                    while t > 0 and kept - hist[qi, t] >= k:  # k kept items lie below t: lower it
                        kept -= hist[qi, t]
                        t -= 1
                size[qi], at_most[qi], thr[qi] = s, kept, t
        for qi in range(qn):
            q, t = q0 + qi, thr[qi]
            counts = np.zeros(nb, np.int64)
            for s in range(size[qi]):
                if buf_d[qi, s] <= t:
                    counts[buf_d[qi, s]] += 1
            pos = np.zeros(nb, np.int64)  # where each distance's items start in the output
            last, take, total = nb - 1, 0, 0  # the distance of the k-th item, and how many of it fit
            for d in range(nb):
                pos[d] = total
                if total + counts[d] >= k:
                    last, take = d, k - total
                    break
                total += counts[d]
            for s in range(size[qi]):  # in position order: a stable counting sort of the first k
                d = buf_d[qi, s]
                if d < last or (d == last and take > 0):
                    if d == last:
                        take -= 1
                    ids[q, pos[d]] = buf_i[qi, s]
                    dists[q, pos[d]] = d
                    pos[d] += 1
    return ids, dists


def hamming_topk(q_words: np.ndarray, db_words: np.ndarray, n_bits: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest database codes of each query, ties by database position: (ids, distances)."""
    q_words, db_words = np.atleast_2d(q_words), np.atleast_2d(db_words)
    if q_words.shape[1] != db_words.shape[1]:
        raise ValueError(f"query codes have {q_words.shape[1]} words, database codes {db_words.shape[1]}")
    if n_bits > 65535:  # the kernel keeps distances in 16 bits
        raise ValueError(f"codes of {n_bits} bits: the top-k kernel takes up to 65,535")
    k = min(k, db_words.shape[0])
    return topk_scan(np.ascontiguousarray(q_words), np.ascontiguousarray(db_words), n_bits, k,
                     query_block(q_words.shape[0]))
