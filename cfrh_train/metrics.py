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
    """Codes (n, K) → uint64 words (n, ceil(K/64)); zero padding does not change distances."""
    bits = to_bits(codes)
    n, k = bits.shape
    padded = np.zeros((n, -(-k // 64) * 64), bool)
    padded[:, :k] = bits
    return np.packbits(padded, axis=1, bitorder="little").view(np.uint64)


def hamming(q_packed: np.ndarray, db_packed: np.ndarray) -> np.ndarray:
    """uint8 distances (nq, ndb) between packed codes."""
    out = np.zeros((q_packed.shape[0], db_packed.shape[0]), np.uint8)
    for w in range(q_packed.shape[1]):
        out += np.bitwise_count(q_packed[:, w:w + 1] ^ db_packed[None, :, w]).astype(np.uint8)
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
    out = np.zeros(nq)
    for q in range(nq):
        full = before[q] + hist_all[q] <= k  # buckets wholly inside the top k
        s_full = _expected_precision_sum(before[q][full], rel_before[q][full], hist_all[q][full],
                                         hist_rel[q][full], H).sum()
        r_full = hist_rel[q][full].sum()
        cross = np.flatnonzero(~full & (before[q] < k))
        if cross.size == 0:
            out[q] = s_full / r_full if r_full else 0.0
            continue
        d = cross[0]
        n, r, m = hist_all[q, d], hist_rel[q, d], k - before[q, d]
        hs = np.arange(0, min(r, m) + 1)
        p = hypergeom.pmf(hs, n, r, m)
        contrib = _expected_precision_sum(np.full(hs.shape, before[q, d]), np.full(hs.shape, rel_before[q, d]),
                                          np.full(hs.shape, m), hs, H)
        denom = r_full + hs
        out[q] = np.sum(np.where(denom > 0, p * (s_full + contrib) / np.maximum(denom, 1), 0.0))
    return out


def evaluate(q_codes: np.ndarray, db_codes: np.ndarray, q_labels: np.ndarray, db_labels: np.ndarray,
             k: int = 50, p_at: tuple[int, ...] = P_AT, chunk: int = 128, full: bool = True) -> dict:
    """All metrics of one retrieval direction. ``full=False`` computes mAP@k only (for validation)."""
    q_packed, db_packed = pack(q_codes), pack(db_codes)
    n_bits = q_codes.shape[1]
    n_db = db_codes.shape[0]
    H = _harmonic(n_db + 1)
    ap_k, ap_all, tie_k, tie_all = [], [], [], []
    p_hits = {p: [] for p in p_at if p <= n_db}
    pr_rel = np.zeros((0, n_bits + 1))
    pr_all = np.zeros((0, n_bits + 1))
    total_rel = []
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
        ap_all.append(_ap(ranked))
        for p in p_hits:
            p_hits[p].append(ranked[:, :p].mean(1))
        offsets = (np.arange(dist.shape[0]) * (n_bits + 1))[:, None]
        flat = (dist.astype(np.int64) + offsets)
        hist_all = np.bincount(flat.ravel(), minlength=dist.shape[0] * (n_bits + 1)).reshape(-1, n_bits + 1)
        hist_rel = np.bincount(flat[rel], minlength=dist.shape[0] * (n_bits + 1)).reshape(-1, n_bits + 1)
        tie_k.append(_tie_avg(hist_all, hist_rel, kk, H))
        tie_all.append(_tie_avg(hist_all, hist_rel, None, H))
        pr_rel = np.vstack([pr_rel, np.cumsum(hist_rel, 1)])
        pr_all = np.vstack([pr_all, np.cumsum(hist_all, 1)])
        total_rel.append(hist_rel.sum(1))
    result = {f"map@{k}": float(np.concatenate(ap_k).mean())}
    if not full:
        return result
    total = np.concatenate(total_rel).astype(np.float64)
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


def _ap(ranked_rel: np.ndarray) -> np.ndarray:
    """AP per row of a relevance matrix in rank order, normalised by the hits in it (0 if none)."""
    hits = np.cumsum(ranked_rel, 1)
    positions = np.arange(1, ranked_rel.shape[1] + 1)
    n_hits = hits[:, -1] if ranked_rel.shape[1] else np.zeros(ranked_rel.shape[0])
    s = np.where(ranked_rel, hits / positions, 0.0).sum(1)
    return np.where(n_hits > 0, s / np.maximum(n_hits, 1), 0.0)
