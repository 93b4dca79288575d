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
from scipy.stats import hypergeom

from cfrh.codes import pack_words, to_bits
from cfrh_train.kernels import FIELD, MASK, evaluation_scan

P_AT = (1, 10, 50, 100, 500, 1000)


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


def evaluate(q_codes: np.ndarray, db_codes: np.ndarray, q_labels: np.ndarray, db_labels: np.ndarray,
             k: int = 50, p_at: tuple[int, ...] = P_AT, full: bool = True) -> dict:
    """All metrics of one retrieval direction. ``full=False`` reports mAP@k only (for validation)."""
    n_bits, n_db = q_codes.shape[1], db_codes.shape[0]
    if db_codes.shape[1] != n_bits:
        raise ValueError(f"query codes have {n_bits} bits, database codes {db_codes.shape[1]}")
    if n_db > MASK or n_bits >= 1 << (64 - 2 * FIELD):
        raise ValueError(f"evaluation handles up to {MASK} database items and {(1 << (64 - 2 * FIELD)) - 1} bits, "
                         f"got {n_db} items of {n_bits} bits")
    kk = min(k, n_db)
    cutoffs = np.array([p for p in p_at if p <= n_db], np.int64)
    hist_all, hist_rel, sum_k, hits_k, sum_all, hits_at = evaluation_scan(
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
        # per query, for paired significance tests (the same pass: no second evaluation)
        "per_query": {f"ap@{k}": ap_k, "ap@all": np.where(total > 0, sum_all / np.maximum(total, 1), 0.0)},
        f"map@{k}_tie_avg": float(_tie_avg(hist_all, hist_rel, kk, H).mean()),
        "map@all_tie_avg": float(_tie_avg(hist_all, hist_rel, None, H).mean()),
        "p@k": {str(p): float((hits_at[:, c] / p).mean()) for c, p in enumerate(cutoffs.tolist())},
        "pr_curve": {"radius": list(range(n_bits + 1)), "precision": precision.tolist(),
                     "recall": recall.tolist()},
    })
    return result
