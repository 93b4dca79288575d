"""LSSH: latent semantic sparse hashing (Zhou et al., SIGIR 2014), written from the paper.

Images are sparse-coded over a learned dictionary, texts factorised, and the two latent spaces
tied by a linear map (rows are items, X_m centred):

    ‖X_1 − S Bᵀ‖² + λ|S|₁ + μ‖X_2 − A Uᵀ‖² + γ‖A − S Rᵀ‖² + ρ(‖U‖² + ‖R‖² + ‖A‖²),  ‖b_j‖ ≤ 1

S (n × k) sparse codes over the dictionary B (d_1 × k), A (n × K) the text's latent semantics,
R (K × k) maps image sparse codes into that space. Alternating updates: S by FISTA (the lasso
over the stacked dictionary [B; √γ R]), B by least squares with its columns projected onto the
unit ball, U, A and R in closed form. Hashing is a sign in A's space, thresholded at the
training mean: an image query is sparse-coded over B (FISTA again, on the device) and mapped by
R; a text query is a = μ x U (μUᵀU + ρI)⁻¹. With ``database_codes: unified`` a database pair's
code is the A that minimises the objective from both: (μ x_2 U + γ s Rᵀ)(μUᵀU + (γ+ρ)I)⁻¹.
NumPy does it all: no sparse-coding library is needed.
"""

from __future__ import annotations

import numpy as np
import torch

from cfrh_train.methods.cmfh import UnifiedCodes
from cfrh_train.methods.linear import LinearHash, ridge_inverse


def fista(target: torch.Tensor, dictionary: torch.Tensor, penalty: float, iterations: int,
          start: torch.Tensor | None = None) -> torch.Tensor:
    """argmin_S ‖target − S Dᵀ‖² + penalty·|S|₁ by FISTA, rows independent (D: d × k); the one
    sparse coder of the fit (float64, host) and of queries (a batch, on the device)."""
    gram, corr = dictionary.T @ dictionary, target @ dictionary
    step = 1 / (2 * torch.linalg.eigvalsh(gram)[-1].clamp_min(1e-12))
    s = torch.zeros_like(corr) if start is None else start.clone()
    z, t = s.clone(), 1.0
    for _ in range(iterations):
        g = z - step * 2 * (z @ gram - corr)
        new = torch.sign(g) * torch.clamp(g.abs() - step * penalty, min=0)
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        z, s, t = new + (t - 1) / t_next * (new - s), new, t_next
    return s


def lasso(target: np.ndarray, dictionary: np.ndarray, penalty: float, iterations: int,
          start: np.ndarray | None = None) -> np.ndarray:
    """``fista`` on NumPy arrays (the fit's)."""
    tensor = lambda a: None if a is None else torch.from_numpy(np.ascontiguousarray(a))
    return fista(tensor(target), tensor(dictionary), penalty, iterations, tensor(start)).numpy()


def lssh_fit(x1: np.ndarray, x2: np.ndarray, c: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """B, S, U, A, R after ``iterations`` alternations."""
    n, k, bits = x1.shape[0], c["dict_size"], c["bits"]
    lam, mu, gamma, rho = c["sparsity"], c["text_weight"], c["correlation_weight"], c["ridge"]
    b = x1[rng.choice(n, size=k, replace=n < k)].T.copy()
    b /= np.maximum(np.linalg.norm(b, axis=0), 1e-12)
    a = rng.normal(size=(n, bits)) / np.sqrt(bits)
    r = np.zeros((bits, k))
    s = None
    for _ in range(c["iterations"]):
        stacked = np.concatenate([b, np.sqrt(gamma) * r], 0)  # (d_1 + K) × k
        s = lasso(np.concatenate([x1, np.sqrt(gamma) * a], 1), stacked, lam, c["lasso_iterations"], s)
        b = (ridge_inverse(s.T @ s, 1e-6) @ s.T @ x1).T
        b /= np.maximum(np.linalg.norm(b, axis=0), 1.0)
        u = x2.T @ a @ np.linalg.inv(a.T @ a + rho / mu * np.eye(bits))
        a = (mu * x2 @ u + gamma * s @ r.T) @ np.linalg.inv(mu * u.T @ u + (gamma + rho) * np.eye(bits))
        r = (ridge_inverse(s.T @ s, rho / gamma) @ s.T @ a).T
    return {"b": b, "s": s, "u": u, "a": a, "r": r}


class LSSH(UnifiedCodes, LinearHash):
    """Text side: the linear map of ``LinearHash``; image side: FISTA over the dictionary, then R."""

    def __init__(self, config: dict, dim_img: int, dim_txt: int, text_kind: str = "bow"):
        super().__init__(config, dim_img, dim_txt, text_kind)
        k, bits = config["dict_size"], config["bits"]
        self.register_buffer("dictionary", torch.zeros(dim_img, k))
        self.register_buffer("to_text", torch.zeros(k, bits))  # Rᵀ
        self.register_unified(k, dim_txt, bits)  # unified_img maps sparse codes here, not features

    def solve(self, x1, x2, rng):
        c = self.config
        fit = lssh_fit(x1, x2, c, rng)
        mu, gamma, rho, bits = c["text_weight"], c["correlation_weight"], c["ridge"], c["bits"]
        u = fit["u"]
        self.dictionary.copy_(torch.from_numpy(fit["b"]))
        self.to_text.copy_(torch.from_numpy(fit["r"].T))
        offset = torch.from_numpy(fit["a"].mean(0))
        self.offset_img.copy_(offset)
        self.offset_txt.copy_(offset)
        self.offset_unified.copy_(offset)
        both = np.linalg.inv(mu * u.T @ u + (gamma + rho) * np.eye(bits))
        self.unified_txt.copy_(torch.from_numpy(mu * u @ both))
        self.unified_img.copy_(torch.from_numpy(gamma * fit["r"].T @ both))
        return np.zeros((x1.shape[1], bits)), mu * u @ np.linalg.inv(mu * u.T @ u + rho * np.eye(bits))

    @torch.no_grad()
    def sparse_codes(self, img: torch.Tensor) -> torch.Tensor:
        """The sparse codes of a batch of image features over the dictionary."""
        return fista(img - self.mean_img, self.dictionary, self.config["sparsity"], self.config["lasso_iterations"])

    @torch.no_grad()
    def encode(self, img=None, txt=None):
        _, code_txt = super().encode(None, txt)
        code_img = None if img is None else self.sparse_codes(img) @ self.to_text - self.offset_img
        return code_img, code_txt

    @torch.no_grad()
    def encode_database(self, img, txt):
        if self.config["database_codes"] != "unified":
            return self.encode(img, txt)
        code = self.sparse_codes(img) @ self.unified_img + (txt - self.mean_txt) @ self.unified_txt - self.offset_unified
        return code, code
