"""CFRH's loss terms (pure functions of codes, targets and reconstructions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def code_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine of relaxed codes: B̂_a B̂_bᵀ on row-normalised codes."""
    return F.normalize(a, dim=1) @ F.normalize(b, dim=1).T


def intra_modal(code_i: torch.Tensor, code_t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(code_similarity(code_i, code_i), s) + F.mse_loss(code_similarity(code_t, code_t), s)


def cross_modal(code_i: torch.Tensor, code_t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """‖B̂_I B̂_Tᵀ − S‖² + ‖B̂_T B̂_Iᵀ − S‖² − mean paired-code cosine (JDSH/CAGAN form)."""
    s_it = code_similarity(code_i, code_t)
    return F.mse_loss(s_it, s) + F.mse_loss(s_it.T, s) - torch.diagonal(s_it).mean()


def quantization(code: torch.Tensor) -> torch.Tensor:
    return (code - torch.where(code >= 0, 1.0, -1.0)).pow(2).mean()


def cfrh_loss(code_i, code_t, s, rec_i, target_i, rec_t, target_t, delta: float, phi: float, lam: float) -> dict:
    """δ·intra + cross + φ·(AE_I + AE_T) + λ·quantisation; returns every term for logging."""
    terms = {"intra": intra_modal(code_i, code_t, s), "cross": cross_modal(code_i, code_t, s),
             "ae": F.mse_loss(rec_i, target_i) + F.mse_loss(rec_t, target_t),
             "quant": quantization(code_i) + quantization(code_t)}
    terms["loss"] = delta * terms["intra"] + terms["cross"] + phi * terms["ae"] + lam * terms["quant"]
    return terms
