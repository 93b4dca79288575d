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


def dgcpn_loss(code_i, code_t, s, pair_target: float, w_dis: float, w_cons: float) -> dict:
    """DGCPN as its official code computes it, on row-normalised codes:
    - ``pair``: the paired codes' cosine fitted to a constant (1.5 in the code: beyond reach,
      so it always pulls an item's two codes together);
    - ``dis``: T–T, I–T and I–I code similarities fitted to S, diagonals masked out;
    - ``cons``: the code-similarity matrices fitted to each other (I–T to I–I, to T–T, I–I to
      T–T, and I–T to its transpose), a consistency the paper does not state."""
    bi, bt = F.normalize(code_i, dim=1), F.normalize(code_t, dim=1)
    ii, tt, it = bi @ bi.T, bt @ bt.T, bi @ bt.T
    off = 1 - torch.eye(s.shape[0], device=s.device, dtype=s.dtype)
    pair = F.mse_loss(it.diagonal(), torch.full_like(it.diagonal(), pair_target))
    dis = sum(F.mse_loss(x * off, s * off) for x in (tt, it, ii))
    cons = F.mse_loss(it, ii) + F.mse_loss(it, tt) + F.mse_loss(ii, tt) + F.mse_loss(it, it.T)
    return {"pair": pair, "dis": dis, "cons": cons, "loss": pair + w_dis * dis + w_cons * cons}


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
