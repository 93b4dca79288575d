"""Batch affinity matrices (pure functions): the targets the relaxed codes are fitted to."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine(x: torch.Tensor, mapping: str = "cos") -> torch.Tensor:
    """Cosine similarity of rows; ``2cos-1`` is the JDSH/DJSRH map (meant for non-negative features)."""
    z = F.normalize(x, dim=1)
    s = z @ z.T
    if mapping == "2cos-1":
        return 2 * s - 1
    if mapping != "cos":
        raise ValueError(f"affinity_map must be 'cos' or '2cos-1', got {mapping!r}")
    return s


def joint(s_i: torch.Tensor, s_t: torch.Tensor, kind: str = "matmul") -> torch.Tensor:
    """The fusion term: JDSH's row-normalised product l2n(S_I)·l2n(S_T)ᵀ (``matmul``), its
    symmetrised form, or the element-wise product S_I ⊙ S_T (the figure's "×" read literally)."""
    if kind == "elementwise":
        return s_i * s_t
    s = F.normalize(s_i, dim=1) @ F.normalize(s_t, dim=1).T
    if kind == "symmetric":
        return (s + s.T) / 2
    if kind != "matmul":
        raise ValueError(f"joint must be 'matmul', 'symmetric' or 'elementwise', got {kind!r}")
    return s


def fused(img: torch.Tensor, txt: torch.Tensor, beta: float, gamma: float, eta: float, mu: float,
          mapping: str = "cos", kind: str = "matmul") -> torch.Tensor:
    """S = μ(β S_I + γ S_T + η S_IT)."""
    s_i, s_t = cosine(img, mapping), cosine(txt, mapping)
    return mu * (beta * s_i + gamma * s_t + eta * joint(s_i, s_t, kind))


def jdsh(img: torch.Tensor, txt: torch.Tensor, w_img: float, w_txt: float, w_joint: float,
         mapping: str = "2cos-1") -> torch.Tensor:
    """JDSH's joint-modal similarity before DSDW and scaling: a·S_I + b·S_T + λ·sym(l2n(S_I)l2n(S_T)ᵀ)."""
    s_i, s_t = cosine(img, mapping), cosine(txt, mapping)
    return w_img * s_i + w_txt * s_t + w_joint * joint(s_i, s_t, "symmetric")


def dsdw_thresholds(s: torch.Tensor, k_left: float, k_right: float) -> dict:
    """JDSH's distribution-based decision, fitted to *these* similarities (the paper fitted its
    constants to AlexNet statistics, which do not transfer to CLIP features).

    The off-diagonal values have a mode ``loc``; the left tail is modelled as Gaussian (scale =
    its RMS deviation from loc), the right tail as Laplace (scale = its mean absolute deviation).
    Pairs below ``loc − k_left·σ_left`` are decided dissimilar, above ``loc + k_right·b_right``
    similar; ``lo``/``hi`` are the extremes the weighting is anchored to.
    """
    values = s[~torch.eye(s.shape[0], dtype=torch.bool, device=s.device)].double()
    hist = torch.histc(values, bins=200, min=float(values.min()), max=float(values.max()))
    width = (values.max() - values.min()) / 200
    loc = values.min() + (hist.argmax().double() + 0.5) * width
    left, right = values[values < loc], values[values >= loc]
    sigma = (left - loc).pow(2).mean().sqrt() if left.numel() else torch.zeros((), dtype=torch.float64)
    b = (right - loc).abs().mean() if right.numel() else torch.zeros((), dtype=torch.float64)
    return {"left": float(loc - k_left * sigma), "right": float(loc + k_right * b),
            "lo": float(values.min()), "hi": float(values.max()), "loc": float(loc)}


def dsdw_share_thresholds(s: torch.Tensor, left_share: float, right_share: float) -> dict:
    """JDSH's decision placed by stated shares: the ``left_share`` least similar off-diagonal
    pairs are decided dissimilar, the ``right_share`` most similar decided similar. Unlike the
    moment fit it cannot land outside the similarities' range (where nothing is re-weighted and
    JDSH silently becomes plain joint similarity), whatever the features' distribution."""
    values = s[~torch.eye(s.shape[0], dtype=torch.bool, device=s.device)].double()
    if values.numel() > 1 << 24:  # torch.quantile's limit; a strided subsample keeps the shape
        values = values[::values.numel() // (1 << 24) + 1]
    q = torch.quantile(values, torch.tensor([left_share, 1 - right_share], dtype=torch.float64, device=s.device))
    return {"left": float(q[0]), "right": float(q[1]), "lo": float(values.min()), "hi": float(values.max())}


def dsdw_share(s: torch.Tensor, left: float, right: float) -> torch.Tensor:
    """The share of off-diagonal pairs DSDW re-weights (below ``left`` or above ``right``)."""
    off = ~torch.eye(s.shape[0], dtype=torch.bool, device=s.device)
    return ((s < left) | (s > right))[off].float().mean()


def dsdw(s: torch.Tensor, left: float, right: float, lo: float, hi: float, l1: float, l2: float) -> torch.Tensor:
    """JDSH's distribution-based weighting: push decided-dissimilar pairs further down and
    decided-similar pairs further up, more strongly the nearer they are to the extremes."""
    out = s.clone()
    below, above = s < left, s > right
    out[below] = (1 + l1 * torch.exp(-(s[below] - lo))) * s[below]
    out[above] = (1 + l2 * torch.exp(s[above] - hi)) * s[above]
    return out


def djsrh(img: torch.Tensor, txt: torch.Tensor, beta: float, eta: float, mu: float,
          mapping: str = "2cos-1") -> torch.Tensor:
    """DJSRH's joint-semantics affinity: S̃ = βS_I + (1−β)S_T, S = μ((1−η)S̃ + η S̃S̃ᵀ/m).

    The second-order term S̃S̃ᵀ/m says two items are alike when they are alike to the same others
    in the batch (m items); DJSRH's ablation credits it with the largest gain.
    """
    s = beta * cosine(img, mapping) + (1 - beta) * cosine(txt, mapping)
    return mu * ((1 - eta) * s + eta * (s @ s.T) / s.shape[0])


def coexistent(img: torch.Tensor, txt: torch.Tensor, w_txt: float) -> torch.Tensor:
    """DGCPN's pairwise ("coexistent") similarity: (1−w)·cos(F_I) + w·cos(F_T)."""
    return (1 - w_txt) * cosine(img) + w_txt * cosine(txt)


def knn_graph(img: torch.Tensor, txt: torch.Tensor, w_txt: float, k: int, chunk: int = 2048):
    """Each training item's k nearest neighbours under the coexistent similarity, with weights
    normalised to sum to 1 (DGCPN's neighbour distribution). Chunked over rows, so the n×n
    matrix never exists whole: (indices (n, k) int64, weights (n, k) float32)."""
    zi, zt = F.normalize(img, dim=1), F.normalize(txt, dim=1)
    n = img.shape[0]
    k = max(1, min(k, n - 1))
    indices, weights = [], []
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(start + chunk, n), device=img.device)
        s = (1 - w_txt) * zi[rows] @ zi.T + w_txt * zt[rows] @ zt.T
        s[torch.arange(rows.numel(), device=s.device), rows] = -float("inf")  # an item is not its own neighbour
        w, idx = s.topk(k, dim=1)
        w = w.clamp(min=0)
        w = torch.where(w.sum(1, keepdim=True) > 0, w / w.sum(1, keepdim=True).clamp(min=1e-12), 1.0 / k)
        indices.append(idx)
        weights.append(w.float())
    return torch.cat(indices), torch.cat(weights)


def neighbour_coherence(indices: torch.Tensor, weights: torch.Tensor, batch: torch.Tensor, n: int,
                        scale: float) -> torch.Tensor:
    """DGCPN's graph-neighbour coherence of a batch: scale·P_b P_bᵀ, the overlap of the items'
    neighbour distributions (two items are alike when their neighbours are), P_b dense (m, n)."""
    p = torch.zeros(batch.numel(), n, device=weights.device)
    p.scatter_(1, indices[batch].long(), weights[batch])
    return scale * (p @ p.T)
