"""CMFH: collective matrix factorization hashing (Ding et al., CVPR 2014), written from the paper.

The two modalities of a pair are factorised onto one latent representation V (n × K), and each
modality learns a projection onto it for out-of-sample items (rows are items, X_m centred):

    λ‖X_1 − V U_1ᵀ‖² + (1−λ)‖X_2 − V U_2ᵀ‖² + μ(‖V − X_1P_1‖² + ‖V − X_2P_2‖²)
        + γ(‖U_1‖² + ‖U_2‖² + ‖P_1‖² + ‖P_2‖² + ‖V‖²)

minimised by alternating exact least-squares updates of U_1, U_2, P_1, P_2 and V (each step
solves its convex sub-problem, so the objective never rises; ``objective`` lets a test see it).
A query is hashed from its own modality, sign(x P_m − offset). A database pair is hashed the
same way by default (``database_codes: modality``, our rule for every method); with
``database_codes: unified`` it gets one code from both modalities, the V that minimises the
objective for that pair, as the paper (and the numbers other papers copy) did.
"""

from __future__ import annotations

import numpy as np
import torch

from cfrh_train.methods.linear import LinearHash, ridge_inverse


def objective(x1, x2, u1, u2, p1, p2, v, lam: float, mu: float, gamma: float) -> float:
    sq = lambda a: float((a * a).sum())
    return (lam * sq(x1 - v @ u1.T) + (1 - lam) * sq(x2 - v @ u2.T) + mu * (sq(v - x1 @ p1) + sq(v - x2 @ p2))
            + gamma * (sq(u1) + sq(u2) + sq(p1) + sq(p2) + sq(v)))


def cmfh_fit(x1: np.ndarray, x2: np.ndarray, bits: int, lam: float, mu: float, gamma: float, iterations: int,
             rng: np.random.Generator, trace: list | None = None) -> dict[str, np.ndarray]:
    """U_1, U_2, P_1, P_2, V after ``iterations`` alternations (``trace``: the objective after each update)."""
    v = rng.normal(size=(x1.shape[0], bits)) / np.sqrt(bits)
    eye = np.eye(bits)
    solve_p = [ridge_inverse(x.T @ x, gamma / mu) @ x.T for x in (x1, x2)]  # P_m = (X_mᵀX_m + γ/μ I)⁻¹X_mᵀ V
    u1, p1 = np.zeros((x1.shape[1], bits)), np.zeros((x1.shape[1], bits))  # before their first update
    u2, p2 = np.zeros((x2.shape[1], bits)), np.zeros((x2.shape[1], bits))
    record = (lambda: trace.append(objective(x1, x2, u1, u2, p1, p2, v, lam, mu, gamma))) if trace is not None else (
        lambda: None)
    for _ in range(iterations):
        u1 = x1.T @ v @ np.linalg.inv(v.T @ v + gamma / lam * eye)
        record()
        u2 = x2.T @ v @ np.linalg.inv(v.T @ v + gamma / (1 - lam) * eye)
        record()
        p1, p2 = solve_p[0] @ v, solve_p[1] @ v
        record()
        v = unified(x1, x2, u1, u2, p1, p2, lam, mu, gamma)
        record()
    return {"u1": u1, "u2": u2, "p1": p1, "p2": p2, "v": v}


def unified(x1, x2, u1, u2, p1, p2, lam: float, mu: float, gamma: float) -> np.ndarray:
    """The V that minimises the objective for pairs (x1, x2) with the maps fixed (the V update)."""
    gram = lam * u1.T @ u1 + (1 - lam) * u2.T @ u2 + (2 * mu + gamma) * np.eye(u1.shape[1])
    return (lam * x1 @ u1 + (1 - lam) * x2 @ u2 + mu * (x1 @ p1 + x2 @ p2)) @ np.linalg.inv(gram)


class UnifiedCodes:
    """``database_codes: unified``: a database pair's one code from both modalities, through
    ``unified_maps``' (W_img, W_txt, offset): sign((x1 − m1) W_img + (x2 − m2) W_txt − offset)."""

    def register_unified(self, dim_img: int, dim_txt: int, bits: int) -> None:
        """``dim_img``: the size of what the image side's map takes (features; LSSH: sparse codes)."""
        self.register_buffer("unified_img", torch.zeros(dim_img, bits))
        self.register_buffer("unified_txt", torch.zeros(dim_txt, bits))
        self.register_buffer("offset_unified", torch.zeros(bits))

    @torch.no_grad()
    def encode_database(self, img, txt):
        if self.config["database_codes"] != "unified":
            return self.encode(img, txt)
        code = ((img - self.mean_img) @ self.unified_img + (txt - self.mean_txt) @ self.unified_txt
                - self.offset_unified)
        return code, code


class CMFH(UnifiedCodes, LinearHash):
    def __init__(self, config: dict, dim_img: int, dim_txt: int, text_kind: str = "bow"):
        super().__init__(config, dim_img, dim_txt, text_kind)
        self.register_unified(dim_img, dim_txt, config["bits"])

    def solve(self, x1, x2, rng):
        c = self.config
        lam, mu, gamma = c["factor_weight"], c["projection_weight"], c["ridge"]
        fit = cmfh_fit(x1, x2, c["bits"], lam, mu, gamma, c["iterations"], rng)
        u1, u2, p1, p2 = fit["u1"], fit["u2"], fit["p1"], fit["p2"]
        inv = np.linalg.inv(lam * u1.T @ u1 + (1 - lam) * u2.T @ u2 + (2 * mu + gamma) * np.eye(c["bits"]))
        self.unified_img.copy_(torch.from_numpy((lam * u1 + mu * p1) @ inv))  # unified(): linear in (x1, x2)
        self.unified_txt.copy_(torch.from_numpy(((1 - lam) * u2 + mu * p2) @ inv))
        self.offset_unified.copy_(torch.from_numpy(fit["v"].mean(0)))
        return p1, p2
