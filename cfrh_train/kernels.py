"""The compiled Hamming kernels, both built on one distance step (XOR + ``popcount`` over uint64
words): ``evaluation_scan`` ranks the whole database per query for the metrics, ``topk_scan``
keeps the k nearest per query for search. Neither sorts: distances take only K+1 values, so
counting items per distance places every item (see ``cfrh_train.metrics`` for the walk)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(inline="always")
def popcount(x):
    """Set bits of a uint64 (the SWAR form; LLVM turns it into the popcnt instruction)."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


FIELD = 27  # bits of each running count in a walk word: databases up to 2**27 - 1 items
MASK = (1 << FIELD) - 1


@numba.njit(parallel=True, cache=True, error_model="numpy", fastmath=True)
def evaluation_scan(q_codes, db_codes, q_labels, db_labels, n_bits, k, cutoffs, workers):
    """Both passes for every query. Returns per query: histograms of all/relevant items per
    distance (nq, K+1), Σ precision at hits within the top k and their count, Σ precision at all
    hits, and the hits within each cutoff of ``cutoffs`` (index-ordered ties throughout).
    Database codes and labels come word-major, (words, n): pass 1 reads contiguous memory.

    Written for the compiler: each worker allocates its buffers once; pass 1 is vectorised
    loops; the walk does one read-modify-write per item, of one word per distance holding both
    running counts (items, relevant items), and keeps the words of relevant items without a
    branch (relevance is random: a branch would mispredict a third of the time). Indices are
    unsigned, so no negative-index wraparound is compiled in.
    """
    nq, n_db = q_codes.shape[0], db_codes.shape[1]
    nb = n_bits + 1
    hist_all = np.zeros((nq, nb), np.int64)
    hist_rel = np.zeros((nq, nb), np.int64)
    sum_k = np.zeros(nq)
    hits_k = np.zeros(nq, np.int64)
    sum_all = np.zeros(nq)
    hits_at = np.zeros((nq, cutoffs.size), np.int64)
    max_cut = cutoffs.max() if cutoffs.size else 0
    field, mask = np.uint64(FIELD), np.uint64(MASK)
    for worker in numba.prange(workers):
        key = np.empty(n_db, np.uint32)  # 2·distance + relevant
        shared = np.empty(n_db, np.uint8)
        found = np.empty(n_db, np.uint64)  # per relevant item: distance | hits | position in its bucket
        count = np.empty(nb, np.uint64)  # per distance: relevant items << FIELD | items, so far
        start = np.empty(nb, np.int64)
        start_rel = np.empty(nb, np.int64)
        at_rank = np.empty(max_cut + 1, np.int64)
        for q in range(worker, nq, workers):
            # pass 1: distances and relevance
            key[:] = 0
            for w in range(q_codes.shape[1]):
                qw = q_codes[q, w]
                for j in range(n_db):
                    key[j] += np.uint32(popcount(qw ^ db_codes[w, j]))
            shared[:] = 0
            for w in range(q_labels.shape[1]):
                lw = q_labels[q, w]
                for j in range(n_db):
                    shared[j] |= (lw & db_labels[w, j]) != 0
            for j in range(n_db):
                key[j] = (key[j] << np.uint32(1)) | np.uint32(shared[j])
            # pass 2, in index order: an item's place within its distance bucket; the final
            # counts are the histograms, which place the buckets in the ranking afterwards
            count[:] = 0
            m = 0
            for j in range(n_db):
                d = key[j] >> np.uint32(1)
                r = np.uint64(key[j] & np.uint32(1))
                word = count[d] + np.uint64(1) + (r << field)
                count[d] = word
                found[m] = word | (np.uint64(d) << (field + field))
                m += np.int64(r)
            before, before_rel = 0, 0
            for d in range(nb):
                hist_all[q, d] = np.int64(count[d] & mask)
                hist_rel[q, d] = np.int64(count[d] >> field)
                start[d], start_rel[d] = before, before_rel
                before += hist_all[q, d]
                before_rel += hist_rel[q, d]
            # rank = items in closer buckets + place in the bucket; hits likewise
            s_all, s_k, h_k = 0.0, 0.0, 0
            for i in range(m):
                d = np.int64(found[i] >> (field + field))
                rank = start[d] + np.int64(found[i] & mask)
                precision = (start_rel[d] + np.int64((found[i] >> field) & mask)) / rank
                inside = rank <= k
                s_all += precision
                s_k += precision if inside else 0.0
                h_k += 1 if inside else 0
            # relevant items at each rank up to the largest cutoff (few: a rare branch), in a loop
            # of its own so that the one above vectorises
            at_rank[:] = 0
            for i in range(m):
                rank = start[np.int64(found[i] >> (field + field))] + np.int64(found[i] & mask)
                if rank <= max_cut:
                    at_rank[rank] += 1
            for c in range(cutoffs.size):
                hits_at[q, c] = at_rank[:cutoffs[c] + 1].sum()
            sum_all[q], sum_k[q], hits_k[q] = s_all, s_k, h_k
    return hist_all, hist_rel, sum_k, hits_k, sum_all, hits_at


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
