"""Building blocks the learned methods share: MLP hash heads on cached features, the α schedule,
the SGD set-up of the DJSRH lineage, and a feature-centring buffer."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cfrh_train.methods.base import Method


class BowLinear(nn.Module):
    """``nn.Linear`` for bag-of-words rows, which are ~1% non-zero: on CPU it sums the weight rows
    of a batch's words (``embedding_bag``) instead of multiplying the zeros, which is most of the
    cost of the widest layer of a text encoder. Same initial values as ``nn.Linear`` (its weight,
    stored transposed: one row per word), same function; dense rows and GPUs take ``addmm``.
    """

    sparse_below = 0.25  # density under which gathering beats the dense product

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        init = nn.Linear(dim_in, dim_out)
        self.weight = nn.Parameter(init.weight.detach().t().contiguous())  # (vocabulary, out)
        self.bias = init.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dim() == 2:
            rows, words = x.nonzero(as_tuple=True)
            if rows.numel() < self.sparse_below * x.numel():
                offsets = torch.searchsorted(rows, torch.arange(x.shape[0]))
                return self.bias + F.embedding_bag(words, self.weight, offsets, mode="sum",
                                                   per_sample_weights=x[rows, words])
        return torch.addmm(self.bias, x, self.weight)


def mlp(dim_in: int, hidden: list[int], dim_out: int, bow_input: bool = False, dropout: float = 0.0) -> nn.Sequential:
    """Linear → ReLU → … → Linear; ``hidden=[]`` is one linear layer (a hash layer on a frozen
    feature). ``bow_input``: the first layer is a ``BowLinear``; ``dropout`` before the last
    layer (DGCPN's heads)."""
    layers, width = [], dim_in
    widths = [*hidden, dim_out]
    for i, h in enumerate(widths):
        if i > 0:
            layers.append(nn.ReLU(inplace=True))
        if i > 0 and i == len(widths) - 1 and dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(BowLinear(width, h) if bow_input and i == 0 else nn.Linear(width, h))
        width = h
    return nn.Sequential(*layers)


class HashHead(nn.Module):
    """MLP then tanh(α·h): relaxed codes in training, ``sign`` of them at test time."""

    def __init__(self, dim_in: int, hidden: list[int], bits: int, bow_input: bool = False, dropout: float = 0.0):
        super().__init__()
        self.net = mlp(dim_in, hidden, bits, bow_input, dropout)
        self.alpha = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.alpha * self.net(x))


def sqrt_alpha(epoch: int) -> float:
    """The lineage's continuation schedule α = √(epoch+1): tanh(α·h) sharpens towards sign(h)."""
    return math.sqrt(epoch + 1)


def sgd(img: nn.Module, txt: nn.Module, config: dict, fused: bool | None = None) -> torch.optim.Optimizer:
    """SGD with separate image/text learning rates (DJSRH, JDSH, CAGAN, DGCPN). Fused (the default
    where the weights are on CPU or CUDA): one pass over each weight for decay, momentum and step,
    instead of three; at batch 32 the step of the wide layers otherwise costs as much as their products."""
    if fused is None:
        fused = all(p.device.type in ("cpu", "cuda") for p in [*img.parameters(), *txt.parameters()])
    return torch.optim.SGD([{"params": img.parameters(), "lr": config["lr_img"]},
                            {"params": txt.parameters(), "lr": config["lr_txt"]}],
                           momentum=config["momentum"], weight_decay=config["weight_decay"], fused=fused)


class Centering(nn.Module):
    """Subtracts the training mean of a modality's features (a buffer, saved with the model).

    CLIP features share one dominant direction (pairwise cosines far above 0), which makes the
    image affinity nearly constant; centring restores its contrast. Our choice for every method
    on CLIP features (``center_features``), not the papers', which used AlexNet/VGG features.
    """

    def __init__(self, dim: int, enabled: bool):
        super().__init__()
        self.enabled = enabled
        self.register_buffer("mean", torch.zeros(dim))

    def fit(self, x: torch.Tensor) -> None:
        if self.enabled:
            self.mean.copy_(x.mean(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.mean


class TwoTower(Method):
    """An image hash head on the (centred) cached feature and a text hash head on the text: a
    gathering BoW layer for a BoW, a dense layer on centred features for dense text.

    The frame JDSH, DJSRH, DGCPN and UCCH share on frozen features; each subclass adds its
    affinity and loss (``loss``) and whatever it precomputes on the training rows (``fit``).
    """

    def __init__(self, config: dict, dim_img: int, dim_txt: int, text_kind: str = "bow", dropout: float = 0.0):
        super().__init__()
        self.config = config
        self.center = Centering(dim_img, config["center_features"])
        self.center_txt = Centering(dim_txt, text_kind == "dense" and config["center_text"])
        self.image = HashHead(dim_img, config["img_hidden"], config["bits"], dropout=dropout)
        self.text = HashHead(dim_txt, config["txt_hidden"], config["bits"], bow_input=text_kind == "bow", dropout=dropout)

    def fit(self, img: torch.Tensor, txt: torch.Tensor) -> None:
        self.center.fit(img)
        self.center_txt.fit(txt)

    def prepare(self, img: torch.Tensor, txt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The features the affinities and the hash heads see: each modality centred where asked."""
        return self.center(img), self.center_txt(txt)

    def set_epoch(self, epoch: int) -> None:
        self.image.alpha = self.text.alpha = sqrt_alpha(epoch)

    def optimizer(self) -> torch.optim.Optimizer:
        return sgd(self.image, self.text, self.config)

    def query_modules(self) -> dict[str, nn.Module]:
        return {"center": self.center, "center_txt": self.center_txt, "image": self.image, "text": self.text}

    def codes(self, img: torch.Tensor, txt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image(self.center(img)), self.text(self.center_txt(txt))

    @torch.no_grad()
    def encode(self, img: torch.Tensor | None = None, txt: torch.Tensor | None = None):
        return (None if img is None else self.image(self.center(img)),
                None if txt is None else self.text(self.center_txt(txt)))
