"""What ``bench/run.py`` measures against or on: the lineage's evaluation loop, peer-style
training code, and the synthetic data of the benchmark's sections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cfrh_cache.splits import make_split
from cfrh_cache.store import Cache
from cfrh_train.methods.nets import BowLinear


def calculate_top_map(qB, rB, qL, rL, topk):
    """The DJSRH lineage's per-query loop (numpy argsort), as peers run it."""
    total = 0.0
    for i in range(qB.shape[0]):
        gnd = (qL[i] @ rL.T > 0).astype(np.float32)
        hamm = 0.5 * (qB.shape[1] - qB[i] @ rB.T)
        tgnd = gnd[np.argsort(hamm)][:topk]
        tsum = int(tgnd.sum())
        if tsum:
            count = np.linspace(1, tsum, tsum)
            total += np.mean(count / (np.asarray(np.where(tgnd == 1)) + 1.0))
    return total / qB.shape[0]


def structured_codes(n: int, bits: int, centres: int, flip: float, rng) -> np.ndarray:
    """±1 codes from a few thousand centres with bit noise: clustered, as trained codes are."""
    c = rng.random((centres, bits)) < 0.5
    out = np.empty((n, bits), np.int8)
    for start in range(0, n, 1_000_000):  # in slabs: 10 M × 64 bools at once would be 640 MB
        stop = min(n, start + 1_000_000)
        drawn = c[rng.integers(0, centres, stop - start)] ^ (rng.random((stop - start, bits)) < flip)
        out[start:stop] = np.where(drawn, 1, -1)
    return out


def peer_style(method: torch.nn.Module) -> torch.nn.Module:
    """The same function as peer code computes it: every ``BowLinear`` back to a dense ``nn.Linear``."""
    for module in list(method.modules()):
        for name, child in module.named_children():
            if isinstance(child, BowLinear):
                dense = torch.nn.Linear(*child.weight.shape)
                with torch.no_grad():
                    dense.weight.copy_(child.weight.t())
                    dense.bias.copy_(child.bias)
                setattr(module, name, dense)
    return method


def mirflickr_shaped_cache(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """A cache of MIRFlickr's shapes (20,015 rows, 512-d features, 1,386-word texts of ~10 words,
    24 labels) whose features carry the labels; returns (image, text)."""
    rng = np.random.default_rng(0)
    n, classes, dim, vocab = 20015, 24, 512, 1386
    labels = (rng.random((n, classes)) < 0.12).astype(np.uint8)
    labels[labels.sum(1) == 0, 0] = 1
    # texts of ~10 words: MIRFlickr images carry ~9 tags (Huiskes & Lew, 2008), fewer in its vocabulary
    centres_i, centres_t = rng.normal(size=(classes, dim)), rng.random((classes, vocab)) < 0.0025
    image = (labels @ centres_i + rng.normal(scale=2.0, size=(n, dim))).astype(np.float16)
    text = ((labels @ centres_t) > 0) | (rng.random((n, vocab)) < 0.002)
    cache = Cache.create(root / "mirflickr", "mirflickr", n)
    cache.write("labels", labels)
    cache.write_text(text.astype(np.uint8), "bow", {})
    split = make_split(labels, "mirflickr", "djsrh", 0)
    for key in ("query", "database", "train", "val"):
        cache.write(f"split/{key}", getattr(split, key))
    cache.update_attrs(split=split.describe())
    cache.write("image/synthetic__none", image)
    return image, text
