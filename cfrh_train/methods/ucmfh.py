"""UCMFH (Xia et al., "When CLIP meets cross-modal hashing retrieval: A new strong baseline",
Information Fusion 100:101968, 2023), from the paper and its official code (XinyuXia97/UCMFH):
CLIP image and CLIP *text* features, a small fusion transformer trained contrastively, then two
hash heads trained contrastively on its output.

- Fusion: an item's token is its image feature and its text feature side by side; a transformer
  encoder (2 layers, 4 heads, feed-forward 2048, dropout .1) maps it to a vector whose two
  halves, l2-normalised together, are the item's fused image and text embeddings.
- Hash heads, one per modality: l2n → 4096 → ReLU → dropout .3 → K → tanh → l2n.
- Loss: NT-Xent (temperature .5, both modalities' other items as negatives) between the fused
  embeddings, plus .5 × the same between the two heads' codes.
- Adam (β .5, .999): fusion lr 1e-4, heads 1e-3 × 1.44 (the code steps its heads' schedule,
  milestones 30 and 80 with γ 1.2, once per *batch*, so from the 80th batch on the heads run at
  1.44e-3; we use that rate throughout); batch 128, 100 epochs.

Needs dense text features (CLIP text embeddings: ``cfrh-cache features --text-encoder …``, then
``cfrh-train --text TAG``); a bag of words is refused.

What the code does that one might expect it not to, checked by running it: its transformer
(``batch_first=False``, fed ``tokens.unsqueeze(0)``) sees each item as a sequence of *one*
token, so despite appearances no item attends to another, in training or at evaluation (an
item's output is the same in any batch); we keep that one-token form. Its query and database
loaders drop the last partial batch (``drop_last=True``), which silently leaves items out of
the evaluation; here every query and database item is hashed.

Deviations, and why:
- **one modality per query**: the code hashes every query and database item from its image
  *and* its text, which makes "image → text" a fused-to-fused search. A cross-modal query has
  one modality, so a code here comes from one side of the token with the other side empty
  (zeros, which after centring is the training mean). Training adds the same two losses on
  such one-sided tokens (``w_single``), so that the heads learn the inputs they are queried with;
- features are the cached ones, centred (our rule for CLIP features); the code trains on the
  first 4,992 training rows (a multiple of its batch), we on all of them;
- selection: validation mAP@50 every ``eval_every`` epochs (the code reports the test
  queries every 10 epochs and keeps the last).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cfrh.errors import ConfigError
from cfrh_train.methods.base import Method
from cfrh_train.methods.nets import Centering


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent: item i's two views (a_i, b_i) are the positive pair; every other row
    of both modalities is a negative; the mean over the 2m rows."""
    z = F.normalize(torch.cat([a, b]), dim=1)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(len(z), dtype=torch.bool, device=z.device), float("-inf"))
    m = a.shape[0]
    target = torch.cat([torch.arange(m, 2 * m), torch.arange(m)]).to(z.device)
    return F.cross_entropy(logits, target)


class HashMlp(nn.Module):
    """l2n → width → ReLU → dropout → K → tanh → l2n (UCMFH's ImageMlp/TextMlp)."""

    def __init__(self, dim_in: int, width: int, bits: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim_in, width), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(width, bits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(torch.tanh(self.net(F.normalize(x, dim=1))), dim=1)


class UCMFH(Method):
    needs_dense_text = True

    def __init__(self, config: dict, dim_img: int, dim_txt: int, text_kind: str = "bow"):
        super().__init__()
        if text_kind != "dense":
            raise ConfigError("ucmfh needs dense text features (CLIP text embeddings): build them with "
                              "`cfrh-cache features DATASET --text-encoder …` and train with `--text TAG`; "
                              "this cache's text is a bag of words")
        c = self.config = config
        width = dim_img + dim_txt
        if width % (2 * c["fusion_heads"]):
            raise ConfigError(f"ucmfh: image width + text width = {width} must be a multiple of "
                              f"2 × fusion_heads = {2 * c['fusion_heads']}")
        self.dims = (dim_img, dim_txt)
        self.center = Centering(dim_img, config["center_features"])
        self.center_txt = Centering(dim_txt, config["center_text"])
        layer = nn.TransformerEncoderLayer(width, c["fusion_heads"], c["fusion_ff"], c["fusion_dropout"],
                                           batch_first=True)
        self.fusion = nn.TransformerEncoder(layer, c["fusion_layers"], enable_nested_tensor=False)
        self.image = HashMlp(width // 2, c["head_width"], c["bits"], c["dropout"])
        self.text = HashMlp(width // 2, c["head_width"], c["bits"], c["dropout"])

    def fit(self, img: torch.Tensor, txt: torch.Tensor) -> None:
        self.center.fit(img)
        self.center_txt.fit(txt)

    def optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        heads = [*self.image.parameters(), *self.text.parameters()]
        return torch.optim.Adam([{"params": self.fusion.parameters(), "lr": c["lr"]},
                                 {"params": heads, "lr": c["lr_heads"]}], betas=(0.5, 0.999))

    def query_modules(self) -> dict[str, nn.Module]:
        return {"center": self.center, "center_txt": self.center_txt, "fusion": self.fusion,
                "image": self.image, "text": self.text}

    def fuse(self, img: torch.Tensor | None, txt: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused embeddings of items, each a sequence of one token ([image ‖ text]; a missing
        side is zeros, the training mean after centring); returns the l2-normalised output's two
        halves, the fused (image, text) embeddings."""
        like = img if img is not None else txt
        img = self.center(img) if img is not None else like.new_zeros(like.shape[0], self.dims[0])
        txt = self.center_txt(txt) if txt is not None else like.new_zeros(like.shape[0], self.dims[1])
        out = F.normalize(self.fusion(torch.cat([img, txt], 1)[:, None, :])[:, 0], dim=1)
        half = out.shape[1] // 2
        return out[:, :half], out[:, half:]

    def loss(self, img: torch.Tensor, txt: torch.Tensor, index: torch.Tensor | None = None) -> dict:
        c, t = self.config, self.config["temperature"]
        fused_i, fused_t = self.fuse(img, txt)
        alone_i, alone_t = self.fuse(img, None)[0], self.fuse(None, txt)[1]
        terms = {"fused": nt_xent(fused_i, fused_t, t), "hash": nt_xent(self.image(fused_i), self.text(fused_t), t),
                 "single": nt_xent(alone_i, alone_t, t) + 0.5 * nt_xent(self.image(alone_i), self.text(alone_t), t)}
        terms["loss"] = terms["fused"] + 0.5 * terms["hash"] + c["w_single"] * terms["single"]
        return terms

    @torch.no_grad()
    def encode(self, img: torch.Tensor | None = None, txt: torch.Tensor | None = None):
        """Each modality alone, each item alone: a query's code depends on nothing else."""
        return (None if img is None else self.image(self.fuse(img, None)[0]),
                None if txt is None else self.text(self.fuse(None, txt)[1]))
