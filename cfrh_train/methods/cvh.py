"""CVH: cross-view hashing (Kumar & Udupa, IJCAI 2011), written from the paper.

Paired items should get the same code: minimise the Hamming distance between the codes of the
two views of each pair, relaxed to ``Σ_i ‖Aᵀx_i − Bᵀy_i‖²`` under ``AᵀC_xA = BᵀC_yB = I``
(uncorrelated, balanced bits). With two views and only the pairs as similarities, its
generalized eigenproblem is

    [0  C_xy; C_yx  0] [a; b] = λ [C_x  0; 0  C_y] [a; b],

whose top K eigenvectors give the projections (this is CCA: λ are the canonical correlations).
``ridge`` is added to C_x and C_y (BoW covariances are singular). Codes: sign of the centred
projection, per view.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from cfrh_train.methods.linear import LinearHash


def cvh_projections(x1: np.ndarray, x2: np.ndarray, bits: int, ridge: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A, B, λ): the K leading generalized eigenvectors of CVH's problem, split by view, and their
    eigenvalues, largest first. ``x1``, ``x2``: centred rows (n, d1) and (n, d2)."""
    n, d1 = x1.shape
    c11 = x1.T @ x1 / n + ridge * np.eye(d1)
    c22 = x2.T @ x2 / n + ridge * np.eye(x2.shape[1])
    c12 = x1.T @ x2 / n
    lhs = np.block([[np.zeros_like(c11), c12], [c12.T, np.zeros_like(c22)]])
    rhs = scipy.linalg.block_diag(c11, c22)
    size = lhs.shape[0]
    k = min(bits, size)
    values, vectors = scipy.linalg.eigh(lhs, rhs, subset_by_index=[size - k, size - 1])
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    if k < bits:  # more bits than dimensions: the rest repeat the leading ones (never a zero column)
        vectors = np.concatenate([vectors, vectors[:, :bits - k]], 1)
        values = np.concatenate([values, values[:bits - k]])
    return vectors[:d1], vectors[d1:], values


class CVH(LinearHash):
    def solve(self, x1, x2, rng):
        a, b, _ = cvh_projections(x1, x2, self.config["bits"], self.config["ridge"])
        return a, b
