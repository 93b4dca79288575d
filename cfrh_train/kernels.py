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


@numba.njit(parallel=True, cache=True)
def topk_scan(q_words, db_words, n_bits, k):
    """The k nearest database codes of each query, ties by position, in one pass: a running
    threshold ``t`` (an item is kept while its distance is below it, or equal while fewer than k
    kept ones are at most ``t``) skips almost every item after the first few thousand; the kept
    ones are placed by a counting sort at the end, exactly as a stable sort would order them."""
    nq, n, w = q_words.shape[0], db_words.shape[0], q_words.shape[1]
    nb = n_bits + 1
    ids = np.empty((nq, k), np.int64)
    dists = np.empty((nq, k), np.int32)
    for q in numba.prange(nq):
        cap = 4 * k + 64
        buf_i = np.empty(cap, np.int64)
        buf_d = np.empty(cap, np.int64)
        hist = np.zeros(nb, np.int64)  # distances of the kept items
        size, t, at_most = 0, nb - 1, 0  # kept items; the threshold; kept items at most t
        q0 = q_words[q, 0]
        for j in range(n):
            if w == 1:  # codes of up to 64 bits: one word
                d = np.int64(popcount(q0 ^ db_words[j, 0]))
            else:
                d = np.int64(0)
                for x in range(w):
                    d += np.int64(popcount(q_words[q, x] ^ db_words[j, x]))
            if d > t or (d == t and at_most >= k):
                continue
            if size == cap:  # drop what the threshold has passed; grow if all still count
                keep = 0
                for s in range(size):
                    if buf_d[s] <= t:
                        buf_i[keep], buf_d[keep] = buf_i[s], buf_d[s]
                        keep += 1
                size = keep
                if size == cap:
                    grown_i, grown_d = np.empty(2 * cap, np.int64), np.empty(2 * cap, np.int64)
                    grown_i[:size], grown_d[:size] = buf_i[:size], buf_d[:size]
                    buf_i, buf_d, cap = grown_i, grown_d, 2 * cap
            buf_i[size], buf_d[size] = j, d
            size += 1
            hist[d] += 1
            at_most += 1
            while t > 0 and at_most - hist[t] >= k:  # k kept items lie below t: lower it
                at_most -= hist[t]
                t -= 1
        counts = np.zeros(nb, np.int64)
        for s in range(size):
            if buf_d[s] <= t:
                counts[buf_d[s]] += 1
        pos = np.zeros(nb, np.int64)  # where each distance's items start in the output
        last, take, total = nb - 1, 0, 0  # the distance of the k-th item, and how many of it fit
        for d in range(nb):
            pos[d] = total
            if total + counts[d] >= k:
                last, take = d, k - total
                break
            total += counts[d]
        for s in range(size):  # in position order: a stable counting sort of the first k
            d = buf_d[s]
            if d < last or (d == last and take > 0):
                if d == last:
                    take -= 1
                ids[q, pos[d]] = buf_i[s]
                dists[q, pos[d]] = d
                pos[d] += 1
    return ids, dists
