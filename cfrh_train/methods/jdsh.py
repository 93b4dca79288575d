"""JDSH, frozen-backbone form (Liu et al., "Joint-modal Distribution-based Similarity Hashing
for Large-scale Unsupervised Deep Cross-modal Retrieval", SIGIR 2020).

- Joint-modal similarity: S' = a·S_I + b·S_T + λ·sym(l2n(S_I)·l2n(S_T)ᵀ), S_* = 2cos − 1.
- DSDW (distribution-based similarity decision and weighting): pairs in the left tail of the
  similarity distribution are decided dissimilar and pushed down, pairs in the right tail similar
  and pushed up; S = μ·DSDW(S').
- Loss: INTRA·(‖B̂_I B̂_Iᵀ − S‖² + ‖B̂_T B̂_Tᵀ − S‖²) + ‖B̂_I B̂_Tᵀ − S‖² + ‖B̂_T B̂_Iᵀ − S‖²
  − mean paired-code cosine; codes tanh(α·h), α = √(epoch+1).
- Image head: one linear layer on the frozen feature (JDSH: on frozen AlexNet fc7), text head
  V→4096→K; SGD 0.01/0.01, momentum 0.9, weight decay 5e-4, batch 32; MIRFlickr weights
  a .5, b .1, λ .4, μ 1.4 (NUS-WIDE .4/.3/.3 in ``configs/nuswide.json``).

Not reproduced exactly: the DSDW thresholds. JDSH fitted a Gaussian (left) and a Laplace (right)
to AlexNet-feature statistics and hard-coded the result per dataset; those constants do not
transfer to CLIP features, so we fit the same two tails once to the training rows'
similarities (``affinity.dsdw_thresholds``, on a ``dsdw_sample`` subset); the multipliers
``dsdw_left_k``/``dsdw_right_k`` (2, 4) and the weights L1/L2 are JDSH's. JDSH trained 300
epochs on images; on cached features we default to 100 (tune on validation).
"""

from __future__ import annotations

import torch

from cfrh_train.affinity import dsdw, dsdw_thresholds, jdsh
from cfrh_train.losses import jdsh_loss
from cfrh_train.methods.nets import TwoTower


class JDSH(TwoTower):
    def __init__(self, config: dict, dim_img: int, dim_txt: int, text_kind: str = "bow"):
        super().__init__(config, dim_img, dim_txt, text_kind)
        self.register_buffer("thresholds", torch.zeros(4))  # left, right, lo, hi: saved with the model

    def joint(self, img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
        c = self.config
        return jdsh(*self.prepare(img, txt), c["w_img"], c["w_txt"], c["w_joint"], c["affinity_map"])

    @torch.no_grad()
    def fit(self, img: torch.Tensor, txt: torch.Tensor) -> None:
        super().fit(img, txt)
        c = self.config
        g = torch.Generator().manual_seed(c["seed"])
        sample = torch.randperm(img.shape[0], generator=g)[:c["dsdw_sample"]].to(img.device)
        t = dsdw_thresholds(self.joint(img[sample], txt[sample]), c["dsdw_left_k"], c["dsdw_right_k"])
        self.thresholds.copy_(torch.tensor([t["left"], t["right"], t["lo"], t["hi"]]))

    def affinity(self, img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
        c = self.config
        s = self.joint(img, txt)
        if c["dsdw"]:
            left, right, lo, hi = self.thresholds.tolist()
            s = dsdw(s, left, right, lo, hi, c["dsdw_l1"], c["dsdw_l2"])
        return c["mu"] * s

    def loss(self, img: torch.Tensor, txt: torch.Tensor, index: torch.Tensor | None = None) -> dict:
        with torch.no_grad():
            s = self.affinity(img, txt)
        code_i, code_t = self.codes(img, txt)
        return jdsh_loss(code_i, code_t, s, self.config["intra"])
