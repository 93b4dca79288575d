"""CCAH (Cheng et al., "CCAH: A CLIP-Based Cycle Alignment Hashing Method for Unsupervised
Vision-Text Retrieval", Int. J. Intelligent Systems 2023), from the paper and its official code
(CQYIO/CCAH): frozen CLIP ViT-B/32 image features, bag-of-words text through a graph attention
network, and a *modal cyclic* reconstruction.

- Image side: CLIP feature → 1024 → ReLU → K, tanh(α·h); a decoder from the image code to the
  text's width (sigmoid).
- Text side: a GAT over the batch's texts, two items joined when they share a word: 8 heads of
  1024 (ELU, concatenated) then one head to K, dropout .6 on the input and on the attention,
  tanh(α·h); a decoder from the text code to the image's width (sigmoid).
- Cyclic reconstruction: each modality's code reconstructs *the other* modality, in the form
  the code fits it: the Gram matrix of the text code's image reconstruction to the image
  cosines, and of the image code's text reconstruction to the text cosines.
- Target S = μ(β S_I + (1−β) S_T), S_* = 2cos − 1, β .9, μ 1.5. Loss: T–T, I–T and I–I code
  similarities fitted to S; I–I to μS_I and T–T to μS_T (weight η .1); the paired codes' cosine
  fitted to μ; the two cyclic terms; and I–T fitted to its transpose (weight 2).
- SGD with Nesterov momentum .7, weight decay 5e-4, lr .005 on both sides, batch 16, 200
  epochs, α = √(epoch+1).

Deviations, and why:
- a text is hashed alone at query and database time: the official code builds the graph over
  whatever texts share the evaluation batch, so a text's code depends on its batch neighbours
  (and on the batch size and order). Training keeps the batch graph; a lone text attends to
  itself only, which is the same network with its neighbours removed;
- every node has a self-loop (the code's graph has none for a text without words, whose
  attention then spreads evenly over the batch);
- the text code's decoder has the image feature's width (1024 in the code for a 512-d feature;
  only its Gram matrix enters the loss);
- features are the cached CLIP feature, centred (our rule for CLIP features; the code feeds the
  raw feature of each randomly flipped and cropped image, an augmentation a cache does not have);
- selection: validation mAP@50 (the code saves the best epoch by the test queries' mAP@50).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cfrh_train.losses import code_similarity
from cfrh_train.methods.base import Method
from cfrh_train.methods.nets import BowLinear, Centering, HashHead, sqrt_alpha


class GraphAttention(nn.Module):
    """Dense multi-head graph attention (Veličković et al., 2018): for each head,
    e_ij = LeakyReLU(a₁·Wx_i + a₂·Wx_j) over the edges of ``adj``, softmax over j, out_i = Σ_j
    att_ij Wx_j. ``adj=None``: every node alone (attention 1 on itself)."""

    def __init__(self, dim_in: int, dim_out: int, heads: int, dropout: float, bow_input: bool = False):
        super().__init__()
        self.heads, self.dim_out, self.dropout = heads, dim_out, dropout
        self.project = BowLinear(dim_in, heads * dim_out) if bow_input else nn.Linear(dim_in, heads * dim_out)
        self.att_src = nn.Parameter(torch.empty(heads, dim_out))
        self.att_dst = nn.Parameter(torch.empty(heads, dim_out))
        nn.init.xavier_uniform_(self.att_src, gain=1.414)
        nn.init.xavier_uniform_(self.att_dst, gain=1.414)

    def forward(self, x: torch.Tensor, adj: torch.Tensor | None) -> torch.Tensor:
        wx = self.project(x).view(x.shape[0], self.heads, self.dim_out)
        if adj is None:
            return wx
        e = (wx * self.att_src).sum(-1)[:, None, :] + (wx * self.att_dst).sum(-1)[None, :, :]  # (i, j, head)
        e = F.leaky_relu(e, 0.2).masked_fill(~adj[:, :, None], float("-inf"))
        att = F.dropout(torch.softmax(e, dim=1), self.dropout, self.training)
        return torch.einsum("ijh,jho->iho", att, wx)


class TextGAT(nn.Module):
    """CCAH's text encoder: dropout → 8 heads (ELU, concatenated) → dropout → 1 head → tanh(α·h)."""

    def __init__(self, dim_in: int, hidden: int, heads: int, bits: int, dropout: float, bow_input: bool):
        super().__init__()
        self.dropout = dropout
        self.hidden = GraphAttention(dim_in, hidden, heads, dropout, bow_input)
        self.out = GraphAttention(hidden * heads, bits, 1, dropout)
        self.alpha = 1.0

    def forward(self, x: torch.Tensor, adj: torch.Tensor | None = None) -> torch.Tensor:
        x = F.dropout(x, self.dropout, self.training)
        h = F.elu(self.hidden(x, adj)).flatten(1)
        h = F.dropout(h, self.dropout, self.training)
        return torch.tanh(self.alpha * self.out(h, adj)[:, 0])


def text_graph(txt: torch.Tensor) -> torch.Tensor:
    """The batch graph: two texts are joined when they share a word (dense text: a positive
    inner product); every node has a self-loop."""
    return (txt @ txt.T > 0) | torch.eye(txt.shape[0], dtype=torch.bool, device=txt.device)


class CCAH(Method):
    def __init__(self, config: dict, dim_img: int, dim_txt: int, text_kind: str = "bow"):
        super().__init__()
        self.config = config
        self.center = Centering(dim_img, config["center_features"])
        self.center_txt = Centering(dim_txt, text_kind == "dense" and config["center_text"])
        self.image = HashHead(dim_img, config["img_hidden"], config["bits"])
        self.text = TextGAT(dim_txt, config["gat_hidden"], config["gat_heads"], config["bits"], config["gat_dropout"],
                            bow_input=text_kind == "bow")
        self.image_to_text = nn.Linear(config["bits"], dim_txt)  # the cycle: each code decodes the other modality
        self.text_to_image = nn.Linear(config["bits"], dim_img)

    def fit(self, img: torch.Tensor, txt: torch.Tensor) -> None:
        self.center.fit(img)
        self.center_txt.fit(txt)

    def set_epoch(self, epoch: int) -> None:
        self.image.alpha = self.text.alpha = sqrt_alpha(epoch)

    def optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        image = [*self.image.parameters(), *self.image_to_text.parameters()]
        text = [*self.text.parameters(), *self.text_to_image.parameters()]
        return torch.optim.SGD([{"params": image, "lr": c["lr_img"]}, {"params": text, "lr": c["lr_txt"]}],
                               momentum=c["momentum"], weight_decay=c["weight_decay"], nesterov=True)

    def query_modules(self) -> dict[str, nn.Module]:
        return {"center": self.center, "center_txt": self.center_txt, "image": self.image, "text": self.text}

    def loss(self, img: torch.Tensor, txt: torch.Tensor, index: torch.Tensor | None = None) -> dict:
        c = self.config
        img, txt = self.center(img), self.center_txt(txt)
        with torch.no_grad():
            cos_i, cos_t = code_similarity(img, img), code_similarity(txt, txt)
            s_i, s_t = 2 * cos_i - 1, 2 * cos_t - 1
            s = c["mu"] * (c["beta"] * s_i + (1 - c["beta"]) * s_t)
        code_i, code_t = self.image(img), self.text(txt, text_graph(txt))
        ii, tt, it = code_similarity(code_i, code_i), code_similarity(code_t, code_t), code_similarity(code_i, code_t)
        rec_t, rec_i = torch.sigmoid(self.image_to_text(code_i)), torch.sigmoid(self.text_to_image(code_t))
        terms = {
            "fit": F.mse_loss(tt, s) + F.mse_loss(it, s) + F.mse_loss(ii, s),
            "intra": F.mse_loss(ii, c["mu"] * s_i) + F.mse_loss(tt, c["mu"] * s_t),
            "pair": F.mse_loss(it.diagonal(), torch.full_like(it.diagonal(), c["mu"])),
            "cycle": F.mse_loss(code_similarity(rec_i, rec_i), cos_i) + F.mse_loss(code_similarity(rec_t, rec_t), cos_t),
            "symmetry": F.mse_loss(it, it.T),
        }
        terms["loss"] = (terms["fit"] + c["eta"] * terms["intra"] + terms["pair"] + c["w_cycle"] * terms["cycle"]
                         + c["w_sym"] * terms["symmetry"])
        return terms

    @torch.no_grad()
    def encode(self, img: torch.Tensor | None = None, txt: torch.Tensor | None = None):
        """Each text alone (no batch graph): its code does not depend on what it is hashed with."""
        return (None if img is None else self.image(self.center(img)),
                None if txt is None else self.text(self.center_txt(txt)))
