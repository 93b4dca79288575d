"""DJSRH with frozen features (Su et al., "Deep Joint-Semantics Reconstructing Hashing for
Large-Scale Unsupervised Cross-Modal Retrieval", ICCV 2019).

- Joint-semantics affinity: S̃ = β·S_I + (1−β)·S_T with S_* = 2cos − 1, then
  S = μ((1−η)·S̃ + η·S̃S̃ᵀ/m), the second-order term over the m items of the batch.
- Loss: ‖S − B̂_I B̂_Tᵀ‖² + λ1‖S − B̂_I B̂_Iᵀ‖² + λ2‖S − B̂_T B̂_Tᵀ‖² (mean over entries), codes
  tanh(α·h), α = √(epoch+1); η .4, μ 1.5, λ1 = λ2 = .1; β .9 (MIRFlickr), .6 (NUS-WIDE),
  .3 (WIKI, with λ .3); SGD lr image .001, text .01, momentum .9, weight decay 5e-4, batch 32,
  80 epochs (WIKI 200).

Not reproduced exactly: DJSRH fine-tunes AlexNet on raw images (CodeNet_I) while a separate
frozen AlexNet gives S_I. On the cache both roles are played by the frozen CLIP feature and
the image head is a hash layer on it, which is how UCCH re-ran DJSRH on frozen features.
"""

from __future__ import annotations

import torch

from cfrh_train.affinity import djsrh
from cfrh_train.losses import djsrh_loss
from cfrh_train.methods.nets import TwoTower


class DJSRH(TwoTower):
    def loss(self, img: torch.Tensor, txt: torch.Tensor, index: torch.Tensor | None = None) -> dict:
        c = self.config
        with torch.no_grad():
            s = djsrh(*self.prepare(img, txt), c["beta"], c["eta"], c["mu"], c["affinity_map"])
        code_i, code_t = self.codes(img, txt)
        return djsrh_loss(code_i, code_t, s, c["lambda1"], c["lambda2"])
