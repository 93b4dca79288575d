"""Shared fixtures: everything the tests read, they write themselves (no network, no GPU)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from cfrh_cache.pipeline import FeatureOptions, build_features
from cfrh_cache.readers.synth import make_synth, write_mat5

TINY = dict(model="cfrh-tiny-vit", pretrained="none", workers=0, batch_size=16, progress=False)


def features(dataset, root, cache_dir, max_chunks=None, **options):
    """Stage 1 with the tiny random encoder (``options`` override TINY's)."""
    return build_features(dataset, root, cache_dir, FeatureOptions(**{**TINY, **options}), max_chunks=max_chunks)


def pytest_addoption(parser):
    parser.addoption("--cuda-device", default="cuda",
                     help="the device of the tests marked cuda (default cuda: skipped where torch sees none; "
                          "cpu: runs them on the CPU, to check the tests themselves before a GPU runs them)")


@pytest.fixture(scope="session")
def cuda_device(request) -> str:
    """The device of the ``cuda`` tests; they skip where it is CUDA and torch sees no GPU."""
    device = request.config.getoption("--cuda-device")
    if device.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip(f"no CUDA device (torch {torch.__version__}); `pytest -m cuda --cuda-device cpu` checks "
                    "these tests on the CPU")
    return device


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A small demo dataset (images 72 px, so the tiny 64 px model resizes and crops)."""
    return make_synth(tmp_path_factory.mktemp("synth"), n=240, n_labels=6, seed=3, size=72)


@pytest.fixture(scope="session")
def synth_cache(synth_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    features("synth", synth_dir, root, chunk_rows=64)
    return root / "synth"


@pytest.fixture(scope="session")
def quality_cache(tmp_path_factory):
    """A larger demo cache (1,500 pairs, 12 labels) where learned methods can show what they learn."""
    data = make_synth(tmp_path_factory.mktemp("q"), n=1500, n_labels=12, seed=0, size=64)
    root = tmp_path_factory.mktemp("qc")
    features("synth", data, root)
    return root


@pytest.fixture(autouse=True)
def _quiet():
    logging.getLogger("root").setLevel(logging.ERROR)


def topics(n=600, classes=6, dim=64, words=10, seed=0, signed=False):
    """Features whose structure comes from the labels: images = label centres + noise; texts =
    LDA-like topic proportions (or signed, Doc2Vec-like vectors) drawn from the same labels."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, classes), np.uint8)
    labels[np.arange(n), rng.integers(0, classes, n)] = 1
    extra = rng.random(n) < 0.3
    labels[extra, rng.integers(0, classes, extra.sum())] = 1
    image = labels @ rng.normal(size=(classes, dim)) * 2 + rng.normal(size=(n, dim))
    logits = labels @ rng.normal(size=(classes, words)) * 2 + rng.normal(size=(n, words)) * 0.7
    if signed:
        text = logits
    else:
        text = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return image.astype(np.float32), text.astype(np.float32), labels


def trio(folder, iall_writer, n=6, side=6):
    """A MIRFlickr-style trio whose IAll has ``side``-pixel images and ``n`` samples."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = np.eye(3, dtype=np.uint8)[np.arange(n) % 3]
    write_mat5(folder / "mirflickr25k-yall.mat", {"YAll": (rng.random((n, 5)) < 0.5).astype(np.uint8)})
    write_mat5(folder / "mirflickr25k-lall.mat", {"LAll": labels})
    pixels = rng.integers(0, 255, (n, side, side, 3), dtype=np.uint8)  # N×H×W×C
    iall_writer(folder / "mirflickr25k-iall.mat", pixels)
    return pixels


def fake_run(runs: Path, dataset: str, method: str, bits: int, seed: int, map50: dict, mapall: dict) -> Path:
    """A finished run folder as ``write_run`` leaves it (only the fields the table reads)."""
    folder = runs / dataset / method / f"{bits}bit" / f"seed{seed}"
    folder.mkdir(parents=True)
    result = {"schema_version": 2, "method": method, "dataset": dataset, "bits": bits, "seed": seed,
              "encoder": {"tag": "ViT-B-32__openai", "pretrained": "openai"},
              "protocol": {"name": "djsrh", "seed": 0, "n_query": 2000, "n_database": 18015, "n_train": 5000,
                           "n_val": 2000},
              "selection": {"on": "val", "epoch": 9, "rule": "best mean val mAP@50"},
              "metrics": {d: {"map@50": map50[d], "map@all": mapall[d]} for d in ("i2t", "t2i")},
              "config": {"method": method, "bits": bits, "seed": seed}, "cache": {"created": "x"}}
    (folder / "result.json").write_text(json.dumps(result))
    curve = {"radius": [0, 1, 2], "precision": [0.9, 0.7, 0.5], "recall": [0.1, 0.5, 1.0]}
    (folder / "pr_curve.json").write_text(json.dumps({"i2t": curve, "t2i": curve}))
    return folder


def exported_run(config, cache_dir, dataset, runs_dir, spec=None):
    """Train a run (``cfrh-train``), then write its search index (``--export``); the run folder."""
    from cfrh_search.index import IndexSpec, export_index
    from cfrh_train.train import run
    folder = run(config, cache_dir, dataset, runs_dir, progress=False)
    export_index(folder, cache_dir, spec or IndexSpec())
    return folder


def interrupt_after_checkpoints(monkeypatch, n: int):
    """Make the n-th checkpoint save end the run (as Ctrl-C would, after the file is written);
    the contract kit's own interruption (``cfrh_testing.stopping_save``)."""
    from cfrh_testing import stopping_save
    from cfrh_train import train as train_module
    saves: list = []
    monkeypatch.setattr(train_module.Checkpoint, "save", stopping_save(n, saves))
    return saves
