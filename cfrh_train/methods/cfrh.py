"""CFRH (Li et al., IJMIR 12:2, 2023): CLIP-fed autoencoders hashed with a fused-affinity target.

Image branch: cached CLIP feature → MLP → tanh(α·h) code → decoder back to the (l2-normalised)
feature. Text branch: BoW → MLP → tanh(α·h) → sigmoid decoder back to the binarised BoW; dense
text (LDA topics, CLIP text embeddings) gets a dense input layer and a linear decoder back to
its (centred, l2-normalised) feature.
The codes of both modalities are fitted to S = μ(βS_I + γS_T + ηS_IT) (intra-modal, weight δ,
and cross-modal terms), plus φ·reconstruction and an optional λ·quantisation term.
What the paper leaves unpublished (layer sizes, weights) follows its code family; see DESIGN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cfrh_train.affinity import fused
from cfrh_train.losses import cfrh_loss
from cfrh_train.methods.base import Method
from cfrh_train.methods.nets import Centering, HashHead, sgd, sqrt_alpha


class Branch(nn.Module):
    """in → hidden → K code (tanh(α·h)), and a decoder K → in (sigmoid for a BoW input)."""

    def __init__(self, dim_in: int, hidden: int, bits: int, bow: bool):
        super().__init__()
        self.encoder = HashHead(dim_in, [hidden], bits, bow_input=bow)
        self.decoder = nn.Linear(bits, dim_in)
        self.bow = bow

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.encoder(x)
        rec = self.decoder(code)
        return code, torch.sigmoid(rec) if self.bow else rec


class CFRH(Method):
    def __init__(self, config: dict, dim_img: int, dim_txt: int, text_kind: str = "bow"):
        super().__init__()
        self.config, self.bow = config, text_kind == "bow"
        self.image = Branch(dim_img, config["hidden"], config["bits"], bow=False)
        self.text = Branch(dim_txt, config["hidden"], config["bits"], bow=self.bow)
        self.center = Centering(dim_img, config["center_features"])
        self.center_txt = Centering(dim_txt, not self.bow and config["center_text"])

    def fit(self, img: torch.Tensor, txt: torch.Tensor) -> None:
        """Before training: the feature means (``center_features``, ``center_text``; see ``nets.Centering``)."""
        self.center.fit(img)
        self.center_txt.fit(txt)

    def set_epoch(self, epoch: int) -> None:
        alpha = sqrt_alpha(epoch) if self.config["alpha_schedule"] == "sqrt" else 1.0  # keys.json: sqrt | constant
        self.image.encoder.alpha = self.text.encoder.alpha = alpha

    def query_modules(self) -> dict[str, nn.Module]:
        return {"center": self.center, "center_txt": self.center_txt, "image.encoder": self.image.encoder,
                "text.encoder": self.text.encoder}

    def optimizer(self) -> torch.optim.Optimizer:
        return sgd(self.image, self.text, self.config)

    def loss(self, img: torch.Tensor, txt: torch.Tensor, index: torch.Tensor | None = None) -> dict:
        """The reconstruction targets: the l2-normalised (centred) image feature; a BoW's binarised
        words (sigmoid decoder), or dense text's l2-normalised (centred) feature (linear decoder)."""
        c = self.config
        img, txt = self.center(img), self.center_txt(txt)
        with torch.no_grad():
            s = fused(img, txt, c["beta"], c["gamma"], c["eta"], c["mu"], c["affinity_map"], c["joint"])
        code_i, rec_i = self.image(img)
        code_t, rec_t = self.text(txt)
        if not self.bow:
            target_t = F.normalize(txt, dim=1)
        else:  # binarised words (the lineage), or the counts scaled to [0, 1]
            target_t = txt.clamp(max=1.0) if c["bow_target"] == "binary" else txt / txt.amax(1, keepdim=True).clamp(min=1)
        return cfrh_loss(code_i, code_t, s, rec_i, F.normalize(img, dim=1), rec_t, target_t,
                         c["delta"], c["phi"], c["lam"], c["w_cross"], c["w_pair"])

    @torch.no_grad()
    def encode(self, img: torch.Tensor | None = None, txt: torch.Tensor | None = None):
        return (None if img is None else self.image(self.center(img))[0],
                None if txt is None else self.text(self.center_txt(txt))[0])
