"""Retrieval metrics for hash codes, shared by every method.

Conventions (see DESIGN "Evaluation"):
- relevance: query and item share at least one label;
- ranking: Hamming distance, ties broken by database index (a stable sort), so numbers are
  reproducible; ``map@k`` is the DJSRH lineage's ``calculate_top_map``: AP over the hits inside
  the top k, normalised by the number of those hits, a query without hits counting 0;
- ``*_tie_avg``: the expected AP over all orders of tied items (McSherry & Najork, 2008),
  which depends on no order at all; computed in closed form from per-distance counts.

Work is chunked over queries: distances are uint8 on packed bits (``np.bitwise_count``), so a
chunk of 2,000 × 184,577 never exists as a float64 matrix.
"""

from __future__ import annotations

import numpy as np

P_AT = (1, 10, 50, 100, 500, 1000)


def to_bits(codes: np.ndarray) -> np.ndarray:
    """±1 (or real, sign(0)=+1) codes (n, K) → bool bits, 1 for +1."""
    return np.asarray(codes) >= 0


def pack(codes: np.ndarray) -> np.ndarray:
    """Codes (n, K) → uint32 words (n, ceil(K/32)); zero padding does not change distances.

    32-bit words, not 64: numpy's popcount runs several times faster on them here.
    """
    bits = to_bits(codes)
    n, k = bits.shape
    padded = np.zeros((n, -(-k // 32) * 32), bool)
    padded[:, :k] = bits
    return np.ascontiguousarray(np.packbits(padded, axis=1, bitorder="little")).view(np.uint32)


def hamming(q_packed: np.ndarray, db_packed: np.ndarray) -> np.ndarray:
    """Distances (nq, ndb) between packed codes: uint8 up to 255 bits, uint16 beyond."""
    dtype = np.uint8 if q_packed.shape[1] * 32 < 256 else np.uint16
    out = np.bitwise_count(q_packed[:, :1] ^ db_packed[None, :, 0]).astype(dtype, copy=False)
    for w in range(1, q_packed.shape[1]):
        out += np.bitwise_count(q_packed[:, w:w + 1] ^ db_packed[None, :, w])
    return out


def relevance(q_labels: np.ndarray, db_labels: np.ndarray) -> np.ndarray:
    return (q_labels.astype(np.float32) @ db_labels.astype(np.float32).T) > 0


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


def evaluate(q_codes: np.ndarray, db_codes: np.ndarray, q_labels: np.ndarray, db_labels: np.ndarray,
             k: int = 50, p_at: tuple[int, ...] = P_AT, chunk: int = 128, full: bool = True) -> dict:
    """All metrics of one retrieval direction. ``full=False`` computes mAP@k only (for validation)."""
    q_packed, db_packed = pack(q_codes), pack(db_codes)
    n_bits = q_codes.shape[1]
    n_db = db_codes.shape[0]
    H = _harmonic(n_db + 1)
    ap_k, ap_all, tie_k, tie_all = [], [], [], []
    p_hits = {p: [] for p in p_at if p <= n_db}
    pr_rel, pr_all = [], []  # per query: cumulative relevant / retrieved items within each radius
    for start in range(0, q_codes.shape[0], chunk):
        stop = start + chunk
        dist = hamming(q_packed[start:stop], db_packed)
        rel = relevance(q_labels[start:stop], db_labels)
        order = np.argsort(dist, axis=1, kind="stable")  # radix sort on uint8: ties by index
        kk = min(k, n_db)
        top = np.take_along_axis(rel, order[:, :kk], 1)
        ap_k.append(_ap(top))
        if not full:
            continue
        ranked = np.take_along_axis(rel, order, 1)
        hits = np.cumsum(ranked, 1, dtype=np.int32)
        ap_all.append(_ap(ranked, hits))
        for p in p_hits:
            p_hits[p].append(hits[:, p - 1] / p)
        # per-distance counts from the sorted distances: where each distance starts in each row
        sorted_d = np.take_along_axis(dist, order, 1)
        bounds = np.stack([np.searchsorted(row, np.arange(n_bits + 2)) for row in sorted_d])
        hist_all = np.diff(bounds, axis=1)
        cum_hits = np.take_along_axis(np.pad(hits, ((0, 0), (1, 0))), bounds, 1)
        hist_rel = np.diff(cum_hits, axis=1)
        tie_k.append(_tie_avg(hist_all, hist_rel, kk, H))
        tie_all.append(_tie_avg(hist_all, hist_rel, None, H))
        pr_rel.append(np.cumsum(hist_rel, 1))
        pr_all.append(np.cumsum(hist_all, 1))
    result = {f"map@{k}": float(np.concatenate(ap_k).mean())}
    if not full:
        return result
    pr_rel, pr_all = np.concatenate(pr_rel), np.concatenate(pr_all)
    total = pr_rel[:, -1].astype(np.float64)  # every item lies within radius K
    retrieved = pr_all > 0  # precision at a radius averages the queries that retrieve anything there
    per_query = np.where(retrieved, pr_rel / np.maximum(pr_all, 1), 0.0)
    precision = per_query.sum(0) / np.maximum(retrieved.sum(0), 1)
    recall = np.mean(np.where(total[:, None] > 0, pr_rel / np.maximum(total[:, None], 1), 0.0), 0)
    result.update({
        "map@all": float(np.concatenate(ap_all).mean()),
        f"map@{k}_tie_avg": float(np.concatenate(tie_k).mean()),
        "map@all_tie_avg": float(np.concatenate(tie_all).mean()),
        "p@k": {str(p): float(np.concatenate(v).mean()) for p, v in p_hits.items()},
        "pr_curve": {"radius": list(range(n_bits + 1)), "precision": precision.tolist(),
                     "recall": recall.tolist()},
    })
    return result


def _ap(ranked_rel: np.ndarray, hits: np.ndarray | None = None) -> np.ndarray:
    """AP per row of a relevance matrix in rank order, normalised by the hits in it (0 if none).

    Σ_hits (hits so far)/(position) as one matrix–vector product: integer cumsum, then BLAS.
    """
    if ranked_rel.shape[1] == 0:
        return np.zeros(ranked_rel.shape[0])
    hits = np.cumsum(ranked_rel, 1, dtype=np.int32) if hits is None else hits
    n_hits = hits[:, -1].astype(np.float64)
    s = (hits * ranked_rel).astype(np.float64) @ (1.0 / np.arange(1, ranked_rel.shape[1] + 1))
    return np.where(n_hits > 0, s / np.maximum(n_hits, 1), 0.0)
