"""DGCPN (Yu et al., "Deep Graph-neighbor Coherence Preserving Network for Unsupervised
Cross-modal Hashing", AAAI 2021).

Three similarity forms make the target of a batch:
- coexistent similarity C = (1−w)·cos(F_I) + w·cos(F_T) of each pair of items;
- graph-neighbour coherence G = scale·P Pᵀ, where row i of P is item i's distribution over its
  k nearest training neighbours (under C): two items are alike when their neighbourhoods are,
  even if their features disagree. The graph is built once over *all* training rows (``fit``),
  not per batch, which is the point of the method;
- S = 2((1−w_g)·C + w_g·G) − 1.
The codes are fitted to S in every intra- and inter-modal form (I–I, T–T, I–T, T–I), real×real
and real×binary (the half-real, half-binary optimisation that reduces quantisation error);
tanh(α·h) codes with α = √(epoch+1). An extra paired-code consistency term (1 − mean cosine of
an item's two codes) is available as ``consistency``, off by default (validation on the demo
data preferred it off).

Not reproduced exactly (the paper's values are for VGG-19 features and are not all public
here): k is a fraction of the training rows (``knn`` 0.1), scale = k (so G is about the share
of common neighbours), w = w_g = .5, the term weights (intra .1, half-binary 1)
and 80 epochs; the image head is one linear layer on the frozen feature as for JDSH.
"""

from __future__ import annotations

import torch

from cfrh_train.affinity import coexistent, knn_graph, neighbour_coherence
from cfrh_train.losses import dgcpn_loss
from cfrh_train.methods.nets import TwoTower


class DGCPN(TwoTower):
    def __init__(self, config: dict, dim_img: int, dim_txt: int, text_kind: str = "bow"):
        super().__init__(config, dim_img, dim_txt, text_kind)
        # the graph: (n_train, k) neighbour rows and weights, saved with the model
        self.register_buffer("nbr_index", torch.zeros(0, 1, dtype=torch.long))
        self.register_buffer("nbr_weight", torch.zeros(0, 1))

    @torch.no_grad()
    def fit(self, img: torch.Tensor, txt: torch.Tensor) -> None:
        super().fit(img, txt)
        k = max(1, round(self.config["knn"] * img.shape[0]))
        self.nbr_index, self.nbr_weight = knn_graph(*self.prepare(img, txt), self.config["w_txt"], k)

    def affinity(self, img: torch.Tensor, txt: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        c = self.config
        coex = coexistent(*self.prepare(img, txt), c["w_txt"])
        n_train, k = self.nbr_index.shape  # scale = k: G is about the share of common neighbours
        graph = neighbour_coherence(self.nbr_index, self.nbr_weight, index, n_train, float(k))
        return 2 * ((1 - c["w_graph"]) * coex + c["w_graph"] * graph) - 1

    def loss(self, img: torch.Tensor, txt: torch.Tensor, index: torch.Tensor | None = None) -> dict:
        if index is None:
            raise ValueError("dgcpn needs the batch's training-row indices (its neighbour graph is global)")
        c = self.config
        with torch.no_grad():
            s = self.affinity(img, txt, index)
        code_i, code_t = self.codes(img, txt)
        return dgcpn_loss(code_i, code_t, s, c["intra"], c["half_binary"], c["consistency"])
