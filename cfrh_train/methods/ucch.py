"""UCCH, feature mode (Hu et al., "Unsupervised Contrastive Cross-modal Hashing", TPAMI 2023).

- Each head gives h = l2n(tanh(f(x))); no α continuation: the binary codes are learnt directly.
- Momentum optimiser: a memory M (N_train × K) of unit vectors whose *signs* are the codes the
  heads are contrasted with. Each item is scored against sign(M) of itself and of
  ``n_negatives`` random others (temperature T·√K), an instance-discrimination softmax for both
  modalities; then M_i ← l2n(m·M_i + (1−m)·l2n((h_I,i + h_T,i)/2)). During the warm-up epochs
  the batch's own (mean) codes stand in for the memory and the momentum is 0.
- Cross-modal ranking loss (CRL, ``losses.ranking_loss``) on h_I·h_Tᵀ, both directions.
- L = α·L_contrast + (1−α)·L_CRL, α .9; Adam lr 1e-4, weight decay 1e-6, batch 256, gradient
  norm clipped at 1, 100 epochs, the learning rate ×0.1 from epochs 30, 60, 90 and 120 (the
  code's MultiStepLR; ``lr_milestones``); image head 3 layers (8192, 8192), text head 2 (8192);
  4,096 negatives, T .9, m .4, margin .2, shift 1.
- Per dataset, the authors' own recipe where their README gives one: MIRFlickr features α .7,
  shift .1, 20 epochs (``configs/mirflickr.json``).

Deviations, and why:
- the code calls its scheduler with the epoch number (``lr_schedu.step(epoch)`` after each
  epoch), which lands each drop one epoch late (×0.1 from epoch 31); we step at the milestones
  the code declares;
- features: the cached CLIP feature, centred (our rule for CLIP features), where UCCH used
  VGG-19 fc7;
- selection: validation mAP@50 on our validation split (the code scores the first 2,000
  retrieval rows against themselves, by mAP@all).
Under ``--protocol ucch`` the training rows are the whole database, as in the paper; under
``djsrh`` the 5,000 (10,000 on COCO) training rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cfrh_train.losses import ranking_loss
from cfrh_train.methods.nets import TwoTower


class UCCH(TwoTower):
    def __init__(self, config: dict, dim_img: int, dim_txt: int, text_kind: str = "bow"):
        super().__init__(config, dim_img, dim_txt, text_kind)
        self.warm = True
        self.register_buffer("memory", torch.zeros(0, config["bits"]))

    @torch.no_grad()
    def fit(self, img: torch.Tensor, txt: torch.Tensor) -> None:
        super().fit(img, txt)
        g = torch.Generator().manual_seed(self.config["seed"])
        signs = torch.randn(img.shape[0], self.config["bits"], generator=g).sign()
        self.memory = F.normalize(signs, dim=1).to(img.device)

    def set_epoch(self, epoch: int) -> None:
        self.warm = epoch < self.config["warmup_epochs"]  # tanh without α: alpha stays 1

    def optimizer(self) -> torch.optim.Optimizer:
        params = list(self.image.parameters()) + list(self.text.parameters())
        return torch.optim.Adam(params, lr=self.config["lr"], weight_decay=self.config["weight_decay"])

    def codes(self, img: torch.Tensor, txt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code_i, code_t = super().codes(img, txt)
        return F.normalize(code_i, dim=1), F.normalize(code_t, dim=1)

    def contrast(self, h_i: torch.Tensor, h_t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Instance discrimination against the signed memory (column 0 is the item itself)."""
        c = self.config
        m = index.numel()
        if self.warm:  # the batch's own codes: each item first, then the others
            mean = (h_i + h_t).detach() / 2
            order = torch.arange(m, device=index.device)
            others = order.repeat(m, 1)[~torch.eye(m, dtype=torch.bool, device=index.device)].view(m, m - 1)
            weight = mean[torch.cat([order[:, None], others], 1)]
        else:
            # the seeded torch generator of the training loop drives this draw (reproducible, resumable)
            draw = torch.randint(0, self.memory.shape[0], (m, c["n_negatives"] + 1)).to(index.device)
            draw[:, 0] = index
            weight = self.memory[draw]
        weight = weight.sign()
        temperature = c["temperature"] * c["bits"] ** 0.5
        target = torch.zeros(m, dtype=torch.long, device=index.device)
        loss = 0.0
        for h in (h_i, h_t):
            logits = torch.bmm(weight, h.unsqueeze(2)).squeeze(2) / temperature
            loss = loss + F.cross_entropy(logits, target)
        return loss

    @torch.no_grad()
    def update_memory(self, h_i: torch.Tensor, h_t: torch.Tensor, index: torch.Tensor) -> None:
        momentum = 0.0 if self.warm else self.config["memory_momentum"]
        new = F.normalize((h_i + h_t) / 2, dim=1)
        self.memory[index] = F.normalize(momentum * self.memory[index] + (1 - momentum) * new, dim=1)

    def loss(self, img: torch.Tensor, txt: torch.Tensor, index: torch.Tensor | None = None) -> dict:
        if index is None:
            raise ValueError("ucch needs the batch's training-row indices (its memory is per item)")
        c = self.config
        h_i, h_t = self.codes(img, txt)
        terms = {"contrast": self.contrast(h_i, h_t, index), "ranking": ranking_loss(h_i, h_t, c["margin"], c["shift"])}
        terms["loss"] = c["alpha"] * terms["contrast"] + (1 - c["alpha"]) * terms["ranking"]
        if self.training:
            self.update_memory(h_i, h_t, index)
        return terms
