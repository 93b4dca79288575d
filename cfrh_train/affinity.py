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
