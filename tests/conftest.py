"""Shared fixtures: everything the tests read, they write themselves (no network, no GPU)."""

from __future__ import annotations

import logging

import pytest

from cfrh_cache.pipeline import FeatureOptions, build_features
from cfrh_cache.readers.synth import make_synth

TINY = dict(model="cfrh-tiny-vit", pretrained="none", workers=0, batch_size=16, progress=False)


def features(dataset, root, cache_dir, max_chunks=None, **options):
    """Stage 1 with the tiny random encoder (``options`` override TINY's)."""
    return build_features(dataset, root, cache_dir, FeatureOptions(**{**TINY, **options}), max_chunks=max_chunks)


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


def interrupt_after_checkpoints(monkeypatch, n: int):
    """Make the n-th checkpoint save end the run (as Ctrl-C would, after the file is written)."""
    from cfrh_train import train as train_module
    original, saves = train_module.Checkpoint.save, []

    def save(self, state):
        original(self, state)
        saves.append(state["epoch"])
        if len(saves) == n:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module.Checkpoint, "save", save)
    return saves
