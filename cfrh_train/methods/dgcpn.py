"""DGCPN (Yu et al., "Deep Graph-neighbor Coherence Preserving Network for Unsupervised
Cross-modal Hashing", AAAI 2021), as its official code (Atmegal/DGCPN, ``train_div.py``) trains
it: the code produced the published numbers, and our earlier reading of the paper scored about
0.05 mAP@50 below it on the same input.

Target S of a batch, from the training rows' features:
- coexistent similarity C = (1−w)·cos(F_I) + w·cos(F_T), heavily image-weighted (w = .01);
- graph-neighbour coherence G = scale·P Pᵀ, where row i of P is item i's similarity-weighted
  distribution over its kept neighbours (the most similar 40 % of the training rows, itself
  excluded), built once over all training rows (``fit``); scale = 2·k (the code's 4,000 for
  its k = 1,999 of 5,000);
- S = 2((1−w_g)·C + w_g·G) − 1, w_g = .3.
Loss (``losses.dgcpn_loss``) on row-normalised codes: the paired codes' cosine fitted to 1.5,
the T–T, I–T and I–I similarities fitted to S off the diagonal, and the four consistency terms
between the code-similarity matrices. Each batch takes **three SGD steps** (``train_step``):
both sides on the joint loss, then the image side against the sign of the text codes, then the
text side against the sign of the image codes. Codes tanh(h) (no α schedule); heads
F → 4096 → ReLU → dropout .5 → K on each side, the text output layer drawn from N(0, .3²);
SGD lr .005 on both sides, momentum .9, weight decay 5e-4, batch 32, 100 epochs.

Deviations, and why:
- features: the cached CLIP feature, centred (VGG-19 fc7 in the code; centring is our rule for
  CLIP features, see ``nets.Centering``); neighbour weights below 0 are clipped to 0 so that P
  stays a distribution (VGG features give no negative cosines);
- the kept share and the scale are fractions (of the training rows, of k), so they carry over
  to other training-set sizes; the code states them as counts for 5,000 rows;
- selection: validation mAP@50 every ``eval_every`` epochs, no early stop (the code evaluates
  every epoch, picks on validation mAP@all and stops after 10 epochs without a gain);
- the paper's form (α = √(epoch+1), real×binary terms, one step per batch) is not kept: it
  scored below the code on the same input and nothing in the paper's numbers depends on it.
"""

from __future__ import annotations

import torch
from torch import nn

from cfrh_train.affinity import coexistent, knn_graph, neighbour_coherence
from cfrh_train.losses import binary, dgcpn_loss
from cfrh_train.methods.base import descend
from cfrh_train.methods.nets import TwoTower


class DGCPN(TwoTower):
    def __init__(self, config: dict, dim_img: int, dim_txt: int, text_kind: str = "bow"):
        super().__init__(config, dim_img, dim_txt, text_kind, dropout=config["dropout"])
        if config["txt_code_init_std"] > 0:  # the code's own draw of the text output layer
            nn.init.normal_(self.text.net[-1].weight, 0.0, config["txt_code_init_std"])
        # the graph: (n_train, k) neighbour rows (int32: k is 40 % of the rows) and weights
        self.register_buffer("nbr_index", torch.zeros(0, 1, dtype=torch.int32))
        self.register_buffer("nbr_weight", torch.zeros(0, 1))

    @torch.no_grad()
    def fit(self, img: torch.Tensor, txt: torch.Tensor) -> None:
        super().fit(img, txt)
        k = max(1, round(self.config["knn"] * img.shape[0]))
        index, self.nbr_weight = knn_graph(*self.prepare(img, txt), self.config["w_txt"], k)
        self.nbr_index = index.int()

    def set_epoch(self, epoch: int) -> None:
        pass  # tanh(h): the code's α schedule is commented out

    def affinity(self, img: torch.Tensor, txt: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        c = self.config
        coex = coexistent(*self.prepare(img, txt), c["w_txt"])
        n_train, k = self.nbr_index.shape
        graph = neighbour_coherence(self.nbr_index, self.nbr_weight, index, n_train, c["graph_scale"] * k)
        return 2 * ((1 - c["w_graph"]) * coex + c["w_graph"] * graph) - 1

    def objective(self, code_i: torch.Tensor, code_t: torch.Tensor, s: torch.Tensor) -> dict:
        c = self.config
        return dgcpn_loss(code_i, code_t, s, c["pair_target"], c["w_dis"], c["w_cons"])

    def loss(self, img: torch.Tensor, txt: torch.Tensor, index: torch.Tensor | None = None) -> dict:
        if index is None:
            raise ValueError("dgcpn needs the batch's training-row indices (its neighbour graph is global)")
        with torch.no_grad():
            s = self.affinity(img, txt, index)
        return self.objective(*self.codes(img, txt), s)

    def train_step(self, img: torch.Tensor, txt: torch.Tensor, index: torch.Tensor,
                   optimizer: torch.optim.Optimizer, grad_clip: float = 0.0) -> dict:
        """The code's three steps: joint; image against sign(text codes); text against
        sign(image codes), both from one forward after the joint step. A side the loss does not
        reach has no gradient, so the shared optimiser steps the other side alone."""
        with torch.no_grad():
            s = self.affinity(img, txt, index)
        terms = self.objective(*self.codes(img, txt), s)
        descend(terms, optimizer, self.parameters(), grad_clip)
        code_i, code_t = self.codes(img, txt)
        descend(self.objective(code_i, binary(code_t), s), optimizer, self.parameters(), grad_clip)
        descend(self.objective(binary(code_i), code_t, s), optimizer, self.parameters(), grad_clip)
        return terms
