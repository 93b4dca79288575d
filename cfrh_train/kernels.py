"""The compiled evaluation kernel: ``evaluation_scan`` ranks the whole database per query for the
metrics, on the distance step of ``cfrh.hamming``. It does not sort: distances take only K+1
values, so counting items per distance places every item (see ``cfrh_train.metrics`` for the walk).
Search's top-k kernel is ``cfrh_search.topk``."""

from __future__ import annotations

import numba
import numpy as np

from cfrh.hamming import popcount

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
