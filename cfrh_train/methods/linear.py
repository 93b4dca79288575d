"""What the shallow methods (CVH, IMH, CMFH, LSSH) share: they are fitted once, in closed form or
by alternating least squares, on the training rows (no epochs), and hash with linear maps of
the centred features, ``sign((x − mean) W − offset)``. The maths is plain NumPy/SciPy on the
host in float64; the fitted maps are buffers, so the search index exports them as any model.
"""

from __future__ import annotations

import numpy as np
import torch

from cfrh_train.methods.base import Method

SIDES = ("img", "txt")


class LinearHash(Method):
    """A method whose codes are ``sign((x − mean) W − offset)`` per modality; ``solve`` fits W."""

    trainable = False

    def __init__(self, config: dict, dim_img: int, dim_txt: int, text_kind: str = "bow"):
        super().__init__()
        self.config, bits = config, config["bits"]
        for side, dim in zip(SIDES, (dim_img, dim_txt)):
            self.register_buffer(f"mean_{side}", torch.zeros(dim))
            self.register_buffer(f"w_{side}", torch.zeros(dim, bits))
            self.register_buffer(f"offset_{side}", torch.zeros(bits))

    def fit(self, img: torch.Tensor, txt: torch.Tensor) -> None:
        x1, x2 = (t.detach().cpu().double().numpy() for t in (img, txt))
        m1, m2 = x1.mean(0), x2.mean(0)
        w1, w2 = self.solve(x1 - m1, x2 - m2, np.random.default_rng(self.config["seed"]))
        for side, mean, w in zip(SIDES, (m1, m2), (w1, w2)):
            getattr(self, f"mean_{side}").copy_(torch.from_numpy(mean))
            getattr(self, f"w_{side}").copy_(torch.from_numpy(np.ascontiguousarray(w)))

    def solve(self, x1: np.ndarray, x2: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The (d_img, K) and (d_txt, K) maps from centred training rows (n, d)."""
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, img=None, txt=None):
        project = lambda x, side: None if x is None else (
            (x - getattr(self, f"mean_{side}")) @ getattr(self, f"w_{side}") - getattr(self, f"offset_{side}"))
        return project(img, "img"), project(txt, "txt")


def ridge_inverse(gram: np.ndarray, ridge: float) -> np.ndarray:
    """(G + ridge·I)⁻¹ of a symmetric Gram matrix, by its Cholesky factor."""
    factor = np.linalg.cholesky(gram + ridge * np.eye(gram.shape[0]))
    inverse = np.linalg.inv(factor)
    return inverse.T @ inverse
