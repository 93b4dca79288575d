"""CFRH's loss terms (pure functions of codes, targets and reconstructions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def code_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine of relaxed codes: B̂_a B̂_bᵀ on row-normalised codes."""
    return F.normalize(a, dim=1) @ F.normalize(b, dim=1).T


def intra_modal(code_i: torch.Tensor, code_t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(code_similarity(code_i, code_i), s) + F.mse_loss(code_similarity(code_t, code_t), s)


def cross_modal(code_i: torch.Tensor, code_t: torch.Tensor, s: torch.Tensor, w_pair: float = 1.0) -> torch.Tensor:
    """‖B̂_I B̂_Tᵀ − S‖² + ‖B̂_T B̂_Iᵀ − S‖² − w_pair · mean paired-code cosine (JDSH/CAGAN form)."""
    s_it = code_similarity(code_i, code_t)
    return F.mse_loss(s_it, s) + F.mse_loss(s_it.T, s) - w_pair * torch.diagonal(s_it).mean()


def quantization(code: torch.Tensor) -> torch.Tensor:
    return (code - torch.where(code >= 0, 1.0, -1.0)).pow(2).mean()


def cfrh_loss(code_i, code_t, s, rec_i, target_i, rec_t, target_t, delta: float, phi: float, lam: float,
              w_cross: float = 1.0, w_pair: float = 1.0) -> dict:
    """δ·intra + w_cross·cross (with w_pair on its paired-code term) + φ·(AE_I + AE_T) +
    λ·quantisation; returns every term for logging. The two w_ weights are 1 in the method and
    exist for its ablation (``cfrh-tune --ablate``)."""
    terms = {"intra": intra_modal(code_i, code_t, s), "cross": cross_modal(code_i, code_t, s, w_pair),
             "ae": F.mse_loss(rec_i, target_i) + F.mse_loss(rec_t, target_t),
             "quant": quantization(code_i) + quantization(code_t)}
    terms["loss"] = delta * terms["intra"] + w_cross * terms["cross"] + phi * terms["ae"] + lam * terms["quant"]
    return terms


def binary(code: torch.Tensor) -> torch.Tensor:
    """sign with sign(0) = +1, outside the graph: the binary side of a half-real, half-binary term."""
    return torch.where(code >= 0, 1.0, -1.0).to(code.dtype).detach()


def jdsh_loss(code_i, code_t, s, intra: float) -> dict:
    """JDSH: INTRA·(I–I + T–T) + I–T + T–I − mean paired-code cosine."""
    terms = {"intra": intra_modal(code_i, code_t, s), "cross": cross_modal(code_i, code_t, s)}
    terms["loss"] = intra * terms["intra"] + terms["cross"]
    return terms


def djsrh_loss(code_i, code_t, s, lambda1: float, lambda2: float) -> dict:
    """DJSRH: ‖μS − B̂_I B̂_Tᵀ‖² + λ1‖μS − B̂_I B̂_Iᵀ‖² + λ2‖μS − B̂_T B̂_Tᵀ‖² (μ already in ``s``)."""
    terms = {"it": F.mse_loss(code_similarity(code_i, code_t), s),
             "ii": F.mse_loss(code_similarity(code_i, code_i), s),
             "tt": F.mse_loss(code_similarity(code_t, code_t), s)}
    terms["loss"] = terms["it"] + lambda1 * terms["ii"] + lambda2 * terms["tt"]
    return terms


def dgcpn_loss(code_i, code_t, s, intra: float, half_binary: float, consistency: float) -> dict:
    """DGCPN as we read its paper: every code-similarity form (I–I, T–T weighted ``intra``; I–T,
    T–I) fitted to S twice, real×real and real×binary (its half-real, half-binary optimisation,
    which lets the binary codes steer training), plus the paired codes' inter-modal consistency."""
    pairs = {"ii": (code_i, code_i, intra), "tt": (code_t, code_t, intra),
             "it": (code_i, code_t, 1.0), "ti": (code_t, code_i, 1.0)}
    real = sum(w * F.mse_loss(code_similarity(a, b), s) for a, b, w in pairs.values())
    half = sum(w * F.mse_loss(code_similarity(a, binary(b)), s) for a, b, w in pairs.values())
    cons = 1 - (F.normalize(code_i, dim=1) * F.normalize(code_t, dim=1)).sum(1).mean()
    return {"real": real, "half_binary": half, "consistency": cons,
            "loss": real + half_binary * half + consistency * cons}


def ranking_loss(h_i: torch.Tensor, h_t: torch.Tensor, margin: float, shift: float, tau: float = 1.0):
    """UCCH's cross-modal ranking loss (CRL): a softmax over *all* negatives of each pair, in both
    directions, where the negatives already ``margin`` below the positive are shifted down by
    ``shift`` so that the many easy ones (false negatives among them) do not dominate."""
    scores = h_i @ h_t.T
    diag = scores.diagonal()
    total = 0.0
    for dim, pos in ((1, diag[:, None]), (0, diag[None, :])):
        keep = (scores >= pos - margin).detach()
        cost = torch.where(keep, scores, scores - shift)
        total = total + (-diag + tau * torch.logsumexp(cost / tau, dim=dim) + margin).mean()
    return total
