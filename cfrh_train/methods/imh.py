"""IMH: inter-media hashing (Song et al., SIGMOD 2013), written from the paper.

Three terms over the relaxed codes Y (n × K, YᵀY = I) of the training pairs:
- intra-media consistency: neighbours within a medium get near codes, ``tr(Yᵀ L_m Y)`` with
  L_m the normalised Laplacian of a k-nearest-neighbour heat-kernel graph of medium m;
- inter-media consistency: the two media of a pair share one code (our training rows are all
  paired, so Y is shared);
- linear hash functions: ``‖X_m W_m − Y‖² + λ‖W_m‖²`` per medium, whose minimiser
  W_m = (X_mᵀX_m + λI)⁻¹X_mᵀY turns the term into ``tr(Yᵀ (I − H_m) Y)``, H_m the ridge hat matrix.

So Y holds the K smallest eigenvectors of ``L_1 + L_2 + β(2I − H_1 − H_2)`` (found by Lanczos on
a matrix-free operator: the graph is sparse, the hat matrices low rank), and codes are
sign(x W_m). The graph needs all pairwise distances, so at most ``sample`` training rows
(seeded) are used: the paper, too, trains on a subset.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from cfrh_train.methods.linear import LinearHash, ridge_inverse


def knn_laplacian(x: np.ndarray, k: int, chunk: int = 2048) -> scipy.sparse.csr_array:
    """The normalised Laplacian I − D^-½ A D^-½ of the symmetric k-NN graph, heat kernel
    exp(−d²/σ²) with σ² the mean squared k-NN distance."""
    n = x.shape[0]
    k = min(k, n - 1)
    sq = (x * x).sum(1)
    rows, cols, dist = [], [], []
    for start in range(0, n, chunk):
        block = np.maximum(sq[start:start + chunk, None] + sq[None] - 2 * x[start:start + chunk] @ x.T, 0)
        block[np.arange(block.shape[0]), np.arange(start, start + block.shape[0])] = np.inf  # not itself
        near = np.argpartition(block, k - 1, axis=1)[:, :k]
        rows.append(np.repeat(np.arange(start, start + block.shape[0]), k))
        cols.append(near.ravel())
        dist.append(np.take_along_axis(block, near, 1).ravel())
    rows, cols, dist = np.concatenate(rows), np.concatenate(cols), np.concatenate(dist)
    sigma2 = max(float(dist.mean()), 1e-12)
    affinity = scipy.sparse.csr_array((np.exp(-dist / sigma2), (rows, cols)), shape=(n, n))
    affinity = affinity.maximum(affinity.T)
    scale = 1 / np.sqrt(np.maximum(np.asarray(affinity.sum(1)).ravel(), 1e-12))
    return scipy.sparse.identity(n, format="csr") - scipy.sparse.diags(scale) @ affinity @ scipy.sparse.diags(scale)


def imh_codes(x1: np.ndarray, x2: np.ndarray, bits: int, k: int, beta: float, ridge: float,
              seed: int = 0) -> np.ndarray:
    """Y (n × K): the K smallest eigenvectors of IMH's matrix, for centred rows x1, x2."""
    n = x1.shape[0]
    laplacian = knn_laplacian(x1, k) + knn_laplacian(x2, k)
    solvers = [(x, ridge_inverse(x.T @ x, ridge)) for x in (x1, x2)]

    def matvec(v: np.ndarray) -> np.ndarray:
        v = v.reshape(n, -1)
        hat = sum(x @ (inv @ (x.T @ v)) for x, inv in solvers)
        return laplacian @ v + beta * (2 * v - hat)
    top = 4.0 + 2 * beta  # ‖M‖ ≤ 2 + 2 + 2β: c·I − M is positive, its largest eigenvectors M's smallest
    shifted = scipy.sparse.linalg.LinearOperator((n, n), matvec=lambda v: top * v.reshape(n, -1) - matvec(v),
                                                 matmat=lambda v: top * v - matvec(v), dtype=np.float64)
    start = np.random.default_rng(seed).normal(size=n)
    _, vectors = scipy.sparse.linalg.eigsh(shifted, k=min(bits, n - 1), which="LA", v0=start, tol=1e-6)
    if vectors.shape[1] < bits:
        vectors = np.concatenate([vectors, vectors[:, :bits - vectors.shape[1]]], 1)
    return vectors[:, ::-1]


class IMH(LinearHash):
    def solve(self, x1, x2, rng):
        c = self.config
        if x1.shape[0] > c["sample"]:
            rows = np.sort(rng.choice(x1.shape[0], c["sample"], replace=False))
            x1, x2 = x1[rows], x2[rows]
        y = imh_codes(x1, x2, c["bits"], c["neighbours"], c["consistency"], c["ridge"], c["seed"])
        return tuple(ridge_inverse(x.T @ x, c["ridge"]) @ (x.T @ y) for x in (x1, x2))
