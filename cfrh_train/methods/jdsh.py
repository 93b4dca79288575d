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
to AlexNet-feature statistics and hard-coded the result per dataset (MIRFlickr: left
−0.49 − 2·0.019, right −0.49 + 4·0.088); those constants do not transfer to CLIP features. The
same fit redone on CLIP features (``dsdw_fit: moments``: σ and b around the mode, × 2 and × 4)
lands outside the similarities' range when their distribution is broad rather than peaked, as
centred CLIP similarities are: no pair is re-weighted and JDSH silently degrades to plain joint
similarity. So by default (``dsdw_fit: shares``) the thresholds are placed where JDSH's own
constants put them in effect, by share: the 5 % least similar training pairs are decided
dissimilar and the 35 % most similar decided similar (about 40 % re-weighted, as the MIRFlickr
constants do on our synthetic cache); fitted once on a ``dsdw_sample`` of the training rows.
The share of a batch's pairs actually re-weighted is logged per epoch (``dsdw_share`` in the
run's history), and a fit that re-weights nothing is warned about. The weights L1/L2 are
JDSH's. JDSH trained 300 epochs on images; on cached features we default to 100.
"""

from __future__ import annotations

import logging

import torch

from cfrh_train.affinity import dsdw, dsdw_share, dsdw_share_thresholds, dsdw_thresholds, jdsh
from cfrh_train.losses import jdsh_loss
from cfrh_train.methods.nets import TwoTower

log = logging.getLogger(__name__)


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
        s = self.joint(img[sample], txt[sample])
        if c["dsdw_fit"] == "shares":
            t = dsdw_share_thresholds(s, c["dsdw_left_share"], c["dsdw_right_share"])
        else:
            t = dsdw_thresholds(s, c["dsdw_left_k"], c["dsdw_right_k"])
        self.thresholds.copy_(torch.tensor([t["left"], t["right"], t["lo"], t["hi"]]))
        if c["dsdw"] and dsdw_share(s, t["left"], t["right"]) == 0:
            log.warning("jdsh: the DSDW thresholds (%.3g, %.3g) lie outside the training similarities "
                        "[%.3g, %.3g]: no pair is re-weighted; use dsdw_fit=shares", t["left"], t["right"], t["lo"], t["hi"])

    def affinity(self, joint: torch.Tensor) -> torch.Tensor:
        """μ·DSDW(S'): the target, from a batch's joint-modal similarity S'."""
        c = self.config
        s = joint
        if c["dsdw"]:
            left, right, lo, hi = self.thresholds.tolist()
            s = dsdw(s, left, right, lo, hi, c["dsdw_l1"], c["dsdw_l2"])
        return c["mu"] * s

    def loss(self, img: torch.Tensor, txt: torch.Tensor, index: torch.Tensor | None = None) -> dict:
        with torch.no_grad():
            joint = self.joint(img, txt)
            s = self.affinity(joint)
        code_i, code_t = self.codes(img, txt)
        terms = jdsh_loss(code_i, code_t, s, self.config["intra"])
        if self.config["dsdw"]:  # logged, not optimised: how much of the batch DSDW re-weighted
            terms["dsdw_share"] = dsdw_share(joint, *self.thresholds[:2].tolist())
        return terms
