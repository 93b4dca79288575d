"""Retrieval metrics for hash codes, shared by every method.

Conventions (see DESIGN "Evaluation"):
- relevance: query and item share at least one label;
- ranking: Hamming distance, ties broken by database index (a stable sort), so numbers are
  reproducible; ``map@k`` is the DJSRH lineage's ``calculate_top_map``: AP over the hits inside
  the top k, normalised by the number of those hits, a query without hits counting 0;
- ``*_tie_avg``: the expected AP over all orders of tied items (McSherry & Najork, 2008),
  which depends on no order at all; computed in closed form from per-distance counts.

No sort and no query × database matrix: distances take only K+1 values, so two passes over
the database per query suffice (a compiled numba kernel, queries in parallel). Pass 1 computes
every item's distance and relevance (labels packed into 64-bit words: relevance is one AND).
Pass 2 walks the database in index order, keeping per distance the running counts of items and
of relevant items: they give each relevant item its place within its distance bucket, and at
the end they are the per-distance histograms, which place every bucket in the ranking. So an
item's rank is ``items in closer buckets + its place in its bucket``, and AP@k, AP@all and P@k
follow. Memory is O(database codes + labels).
"""

from __future__ import annotations

import numba
import numpy as np

P_AT = (1, 10, 50, 100, 500, 1000)


def to_bits(codes: np.ndarray) -> np.ndarray:
    """±1 (or real, sign(0)=+1) codes (n, K) → bool bits, 1 for +1."""
    return np.asarray(codes) >= 0


def _harmonic(n: int) -> np.ndarray:
    h = np.zeros(n + 1)
    h[1:] = np.cumsum(1.0 / np.arange(1, n + 1))
    return h


def _expected_precision_sum(n_before, rel_before, m, h, H):
    """E[Σ precision at the relevant positions] for ``h`` relevant items placed uniformly among
    ``m`` slots following ``n_before`` items of which ``rel_before`` are relevant (arrays)."""
    n_before, rel_before, m, h = (np.asarray(x, np.float64) for x in (n_before, rel_before, m, h))
    mi = np.maximum(m, 1).astype(np.int64)
    nb = n_before.astype(np.int64)
    a = H[nb + mi] - H[nb]  # Σ_{i=1..m} 1/(n_before+i)
    b = m - (n_before + 1) * a  # Σ_{i=1..m} (i-1)/(n_before+i)
    second = np.where(m > 1, (h - 1) / np.maximum(m - 1, 1) * b, 0.0)
    return np.where((m > 0) & (h > 0), h / np.maximum(m, 1) * ((rel_before + 1) * a + second), 0.0)


def _tie_avg(hist_all: np.ndarray, hist_rel: np.ndarray, k: int | None, H: np.ndarray) -> np.ndarray:
    """Expected AP@k (DJSRH normalisation; k=None: AP over the whole ranking) per query."""
    from scipy.stats import hypergeom
    nq, _ = hist_all.shape
    before = np.cumsum(hist_all, 1) - hist_all
    rel_before = np.cumsum(hist_rel, 1) - hist_rel
    if k is None:
        total_rel = hist_rel.sum(1)
        s = _expected_precision_sum(before, rel_before, hist_all, hist_rel, H).sum(1)
        return np.where(total_rel > 0, s / np.maximum(total_rel, 1), 0.0)
    full = before + hist_all <= k  # buckets wholly inside the top k
    s_full = np.where(full, _expected_precision_sum(before, rel_before, hist_all, hist_rel, H), 0.0).sum(1)
    r_full = np.where(full, hist_rel, 0).sum(1)
    crossing = ~full & (before < k)  # at most one bucket per query straddles the cut
    has_cross = crossing.any(1)
    d = crossing.argmax(1)
    rows = np.arange(nq)
    n, r, b, rb = hist_all[rows, d], hist_rel[rows, d], before[rows, d], rel_before[rows, d]
    m = np.where(has_cross, k - b, 0)
    hs = np.arange(k + 1)[None, :]  # hits the cut bucket contributes: hypergeometric over its m slots
    p = np.where(has_cross[:, None], hypergeom.pmf(hs, np.maximum(n, 1)[:, None], r[:, None], m[:, None]), 0.0)
    p = np.nan_to_num(p)
    p[~has_cross, 0] = 1.0
    contrib = _expected_precision_sum(b[:, None], rb[:, None], m[:, None], np.minimum(hs, m[:, None]), H)
    denom = r_full[:, None] + hs
    value = np.where(denom > 0, (s_full[:, None] + contrib) / np.maximum(denom, 1), 0.0)
    return (p * value).sum(1)


def pack_words(bits: np.ndarray) -> np.ndarray:
    """Rows of bools → uint64 words (little-endian bit order), padding with zeros."""
    n, k = bits.shape
    padded = np.zeros((n, max(1, -(-k // 64)) * 64), bool)
    padded[:, :k] = bits
    return np.ascontiguousarray(np.packbits(padded, axis=1, bitorder="little")).view(np.uint64)


@numba.njit(inline="always")
def popcount(x):
    """Set bits of a uint64 (the SWAR form; LLVM turns it into the popcnt instruction)."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


FIELD = 27  # bits of each running count in a walk word: databases up to 2**27 - 1 items
_MASK = (1 << FIELD) - 1


@numba.njit(parallel=True, cache=True, error_model="numpy", fastmath=True)
def _scan(q_codes, db_codes, q_labels, db_labels, n_bits, k, cutoffs, workers):
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
    field, mask = np.uint64(FIELD), np.uint64(_MASK)
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


def evaluate(q_codes: np.ndarray, db_codes: np.ndarray, q_labels: np.ndarray, db_labels: np.ndarray,
             k: int = 50, p_at: tuple[int, ...] = P_AT, full: bool = True) -> dict:
    """All metrics of one retrieval direction. ``full=False`` reports mAP@k only (for validation)."""
    n_bits, n_db = q_codes.shape[1], db_codes.shape[0]
    if db_codes.shape[1] != n_bits:
        raise ValueError(f"query codes have {n_bits} bits, database codes {db_codes.shape[1]}")
    if n_db > _MASK or n_bits >= 1 << (64 - 2 * FIELD):
        raise ValueError(f"evaluation handles up to {_MASK} database items and {(1 << (64 - 2 * FIELD)) - 1} bits, "
                         f"got {n_db} items of {n_bits} bits")
    kk = min(k, n_db)
    cutoffs = np.array([p for p in p_at if p <= n_db], np.int64)
    hist_all, hist_rel, sum_k, hits_k, sum_all, hits_at = _scan(
        pack_words(to_bits(q_codes)), np.ascontiguousarray(pack_words(to_bits(db_codes)).T),
        pack_words(np.asarray(q_labels) > 0), np.ascontiguousarray(pack_words(np.asarray(db_labels) > 0).T),
        n_bits, kk, cutoffs, numba.get_num_threads())
    ap_k = np.where(hits_k > 0, sum_k / np.maximum(hits_k, 1), 0.0)
    result = {f"map@{k}": float(ap_k.mean())}
    if not full:
        return result
    total = hist_rel.sum(1)
    H = _harmonic(n_db + 1)
    pr_rel, pr_all = np.cumsum(hist_rel, 1), np.cumsum(hist_all, 1)  # within each Hamming radius
    retrieved = pr_all > 0  # precision at a radius averages the queries that retrieve anything there
    per_query = np.where(retrieved, pr_rel / np.maximum(pr_all, 1), 0.0)
    precision = per_query.sum(0) / np.maximum(retrieved.sum(0), 1)
    recall = np.mean(np.where(total[:, None] > 0, pr_rel / np.maximum(total[:, None], 1), 0.0), 0)
    result.update({
        "map@all": float(np.where(total > 0, sum_all / np.maximum(total, 1), 0.0).mean()),
        f"map@{k}_tie_avg": float(_tie_avg(hist_all, hist_rel, kk, H).mean()),
        "map@all_tie_avg": float(_tie_avg(hist_all, hist_rel, None, H).mean()),
        "p@k": {str(p): float((hits_at[:, c] / p).mean()) for c, p in enumerate(cutoffs.tolist())},
        "pr_curve": {"radius": list(range(n_bits + 1)), "precision": precision.tolist(),
                     "recall": recall.tolist()},
    })
    return result
