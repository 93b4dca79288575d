"""Training-free baselines every learned method must beat on the same cache.

- ``lsh``: sign of a Gaussian random projection of the centred features (Charikar's SimHash),
  one projection per modality. Across modalities the projections share no meaning, so its
  cross-modal figures sit near chance: the floor, with the same features, that learning lifts.
- ``random``: random ±1 codes per item: the chance level of the metric itself.
"""

from __future__ import annotations

import torch

from cfrh_train.methods.base import Method


class LSH(Method):
    trainable = False

    def __init__(self, config: dict, dim_img: int, dim_txt: int, text_kind: str = "bow"):
        super().__init__()
        g = torch.Generator().manual_seed(config["seed"])
        self.register_buffer("w_img", torch.randn(dim_img, config["bits"], generator=g))
        self.register_buffer("w_txt", torch.randn(dim_txt, config["bits"], generator=g))
        self.register_buffer("mean_img", torch.zeros(dim_img))
        self.register_buffer("mean_txt", torch.zeros(dim_txt))

    def fit(self, img: torch.Tensor, txt: torch.Tensor) -> None:
        self.mean_img.copy_(img.mean(0))
        self.mean_txt.copy_(txt.mean(0))

    @torch.no_grad()
    def encode(self, img=None, txt=None):
        return (None if img is None else (img - self.mean_img) @ self.w_img,
                None if txt is None else (txt - self.mean_txt) @ self.w_txt)


class RandomCodes(Method):
    trainable = False

    def __init__(self, config: dict, dim_img: int, dim_txt: int, text_kind: str = "bow"):
        super().__init__()
        self.bits, self.seed = config["bits"], config["seed"]

    def query_modules(self) -> dict:
        return {}  # codes are drawn per call from the seed: nothing to export

    @torch.no_grad()
    def encode(self, img=None, txt=None):
        def codes(x, salt):
            if x is None:
                return None
            # seeded, independent of the features: chance level by construction
            g = torch.Generator().manual_seed(self.seed * 1000 + salt + int(x.shape[0]))
            return torch.randn(x.shape[0], self.bits, generator=g).to(x.device)
        return codes(img, 1), codes(txt, 2)
