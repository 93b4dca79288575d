"""What ``bench/run.py`` measures against or on: the lineage's evaluation loop, a GPU ranking,
peer-style training code, and the synthetic data of the benchmark's sections."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import h5py
import numpy as np
import scipy.io
import torch

from cfrh.devices import resolve_device
from cfrh_cache.readers.synth import make_synth, write_mat5, write_mat73
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


@torch.no_grad()
def torch_map_at_k(q: np.ndarray, db: np.ndarray, q_labels: np.ndarray, db_labels: np.ndarray, k: int,
                   device: str, block: int = 256) -> float:
    """mAP@k as a GPU-first implementation computes it: ±1 codes as a matrix product, the top k by
    ``topk`` on (distance, index) keys (so ties break by database index, as ours do), relevance
    from a label product; queries in blocks. Only mAP@k: the other metrics need the whole ranking."""
    dev = resolve_device(device)
    dbf, dlf = torch.from_numpy(db).to(dev, torch.float32), torch.from_numpy(db_labels).to(dev, torch.float32)
    n_db, bits = db.shape
    order = torch.arange(n_db, device=dev, dtype=torch.int64)
    total = torch.zeros((), dtype=torch.float64, device=dev)
    ranks = torch.arange(1, k + 1, device=dev, dtype=torch.float64)
    for start in range(0, q.shape[0], block):
        qf = torch.from_numpy(q[start:start + block]).to(dev, torch.float32)
        dist = ((bits - qf @ dbf.T) / 2).round().to(torch.int64)
        top = torch.topk(dist * n_db + order, k, dim=1, largest=False).indices  # keys are unique: a stable order
        ql = torch.from_numpy(q_labels[start:start + block]).to(dev, torch.float32)
        rel = ((ql[:, None, :] * dlf[top]).sum(-1) > 0).to(torch.float64)
        hits = rel.cumsum(1)
        ap = (rel * hits / ranks).sum(1) / hits[:, -1].clamp(min=1)
        total += ap.sum()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return float(total) / q.shape[0]


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


def mirflickr_shaped_cache(root: Path, n: int = 20015) -> tuple[np.ndarray, np.ndarray]:
    """A cache of MIRFlickr's shapes (20,015 rows, 512-d features, 1,386-word texts of ~10 words,
    24 labels; the protocol's sizes scale with a smaller ``n``) whose features carry the labels,
    with 512-d text embeddings beside the BoW (for UCMFH); returns (image, text)."""
    rng = np.random.default_rng(0)
    classes, dim, vocab = 24, 512, 1386
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
    embedding = (labels @ rng.normal(size=(classes, dim)) + rng.normal(scale=2.0, size=(n, dim))).astype(np.float16)
    cache.write("text/synthetic__none", embedding, {"kind": "dense"})
    return image, text


def tiled_synth(root: Path, n: int, base: int, size: int = 224) -> Path:
    """The demo data of ``n`` rows at ``size`` px, drawn for ``base`` rows and repeated (drawing
    takes ~10 ms an image): JPEG files (hard links, one name per row) with ``manifest.csv`` for the
    manifest reader, and the MIRFlickr trio with an uncompressed ``IAll`` for the ``synth`` reader."""
    drawn = make_synth(root / "drawn", n=base, n_labels=8, seed=0, size=size)
    with open(drawn / "manifest.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    out = root / "tiled"
    (out / "images").mkdir(parents=True)
    (out / "mirflickr").mkdir()
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "text", "labels"])
        for i in range(n):
            row = rows[i % base]
            os.link(drawn / row["image"], out / "images" / f"{i:06d}.jpg")
            writer.writerow([f"images/{i:06d}.jpg", f"{row['text']} copy{i // base}", row["labels"]])
    take = np.arange(n) % base
    with h5py.File(drawn / "mirflickr" / "mirflickr25k-iall.mat", "r") as f:
        pixels = f["IAll"][:]  # N×3×W×H as h5py sees MATLAB's H×W×3×N
    write_mat73(out / "mirflickr" / "mirflickr25k-iall.mat", {"IAll": pixels[take].transpose()}, compression=None)
    for key, name in (("YAll", "yall"), ("LAll", "lall")):
        value = scipy.io.loadmat(drawn / "mirflickr" / f"mirflickr25k-{name}.mat")[key]
        write_mat5(out / "mirflickr" / f"mirflickr25k-{name}.mat", {key: value[take]})
    meta = json.loads((drawn / "synth.json").read_text())
    (out / "synth.json").write_text(json.dumps({**meta, "n": n}))
    return out
