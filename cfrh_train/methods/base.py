"""The interface every method follows: what the training loop, the evaluation and the search
index ask of it, written down once instead of found by duck typing or by parameter names."""

from __future__ import annotations

import torch
from torch import nn


class NonFiniteLoss(ArithmeticError):
    """A loss that is NaN or infinite, with its terms; the loop adds the epoch and step."""

    def __init__(self, terms: dict):
        super().__init__(", ".join(f"{k}={float(torch.as_tensor(v).detach()):.4g}" for k, v in terms.items()))
        self.terms = terms


def descend(terms: dict, optimizer: torch.optim.Optimizer, params, grad_clip: float = 0.0) -> None:
    """zero_grad → backward of ``terms["loss"]`` → clip → step; a non-finite loss raises before
    any weight moves. Parameters the loss does not reach keep ``grad=None`` and are not stepped
    (neither momentum nor weight decay), which is how one optimiser can step one side alone."""
    if not torch.isfinite(terms["loss"]):
        raise NonFiniteLoss(terms)
    optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], grad_clip)
    optimizer.step()


class Method(nn.Module):
    """A hashing method on cached features.

    Lifecycle: ``fit`` once on the training rows (means, graphs, memories), then per epoch
    ``set_epoch`` and, per batch, ``train_step``: by default one ``loss`` (a dict of terms with
    the total under ``"loss"``) descended by ``optimizer()``; a method whose authors took several
    steps per batch (DGCPN) overrides it. ``encode`` gives real-valued codes (sign(0) = +1 makes them
    binary) of either modality. ``trainable = False`` methods skip the loop (LSH, random);
    ``needs_dense_text`` ones are given the cache's text embeddings by ``make table``.
    ``query_modules`` names the parts a new query goes through; they alone are exported to the
    search index (no decoders, neighbour graphs or memories).
    """

    trainable: bool = True
    needs_dense_text: bool = False  # True: trains on text embeddings only (UCMFH), never on a BoW

    def fit(self, img: torch.Tensor, txt: torch.Tensor) -> None:
        pass

    def set_epoch(self, epoch: int) -> None:
        pass

    def optimizer(self) -> torch.optim.Optimizer:
        raise NotImplementedError(f"{type(self).__name__} is trainable but has no optimizer")

    def loss(self, img: torch.Tensor, txt: torch.Tensor, index: torch.Tensor | None = None) -> dict:
        raise NotImplementedError(f"{type(self).__name__} is trainable but has no loss")

    def train_step(self, img: torch.Tensor, txt: torch.Tensor, index: torch.Tensor,
                   optimizer: torch.optim.Optimizer, grad_clip: float = 0.0) -> dict:
        """One batch: the loss terms, descended once. Returns the terms (logged per epoch)."""
        terms = self.loss(img, txt, index)
        descend(terms, optimizer, self.parameters(), grad_clip)
        return terms

    def encode(self, img: torch.Tensor | None = None, txt: torch.Tensor | None = None):
        raise NotImplementedError

    def encode_database(self, img: torch.Tensor, txt: torch.Tensor):
        """Codes of paired database items (image, text): by default each hashed from its own
        modality, as a cross-modal query meets them; a method with unified codes (CMFH, LSSH with
        ``database_codes: unified``) hashes each pair from both."""
        return self.encode(img, txt)

    def query_modules(self) -> dict[str, nn.Module]:
        """Name → module of what hashes a new query ("" for the method itself)."""
        return {"": self}

    def index_state(self) -> dict[str, torch.Tensor]:
        """The tensors of ``query_modules``, named as in ``state_dict``, on the CPU."""
        return {f"{name}.{key}" if name else key: value.detach().cpu()
                for name, module in self.query_modules().items() for key, value in module.state_dict().items()}

    def load_index_state(self, state: dict[str, torch.Tensor]) -> None:
        """The inverse of ``index_state``; a missing, unexpected or reshaped tensor raises."""
        used = set()
        for name, module in self.query_modules().items():
            prefix = f"{name}." if name else ""
            part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            used.update(prefix + k for k in part)
            module.load_state_dict(part, strict=True)
        if set(state) - used:
            raise RuntimeError(f"unexpected tensors {sorted(set(state) - used)}")
