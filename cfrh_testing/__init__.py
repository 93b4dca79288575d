"""The contract kit: the battery every built-in method passes, for any method, from pytest in your
own project.

    from cfrh_testing import check_method

    def test_my_method_keeps_the_contract(tmp_path):
        check_method("path/to/mine.py:MyMethod", tmp_path)

``check_method`` builds two small caches of its own (the demo's images through a tiny random
encoder; one with BoW text, one with dense text) and asserts, each with a message that says
what broke:

- the same seed on the CPU gives the same codes;
- a run interrupted after its first checkpoint and run again ends exactly as an uninterrupted one;
- codes are ±1 (sign(0) = +1) of the asked length, for both modalities;
- it trains on BoW and on dense text;
- the test queries are scored once, at the end, never while training;
- its search index, exported, hashes the database rows again to the codes evaluation gave them.

It is a package above the stages (like ``cfrh_cli``): it uses all of them.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np

from cfrh.codes import binarize
from cfrh_cache.importer import import_source
from cfrh_cache.options import FeatureOptions
from cfrh_cache.pipeline import build_features, build_source
from cfrh_cache.readers.synth import make_synth
from cfrh_cache.store import Cache
from cfrh_search.index import Index, export_index
from cfrh_search.queries import Queries
from cfrh_train import train as train_module
from cfrh_train.config import load
from cfrh_train.methods import register
from cfrh_train.train import run, train

TINY = FeatureOptions(model="cfrh-tiny-vit", pretrained="none", workers=0, batch_size=32, progress=False, chunk_rows=64)


def caches(root: Path) -> Path:
    """Two small caches under ``root/cache``: ``bow`` (the demo's captions as BoW) and ``dense``
    (the same image features with dense, signed text vectors drawn from the labels)."""
    cache_dir = root / "cache"
    if (cache_dir / "dense" / "zarr.json").is_file():
        return cache_dir
    data = make_synth(root / "data", n=240, n_labels=6, seed=3, size=64)
    build_features("synth", data, cache_dir, TINY)
    Path(cache_dir / "synth").rename(cache_dir / "bow")
    bow = Cache.open(cache_dir / "bow")
    image, labels = bow.read(f"image/{bow.encoders()[0]}").astype(np.float32), bow.read("labels")
    rng = np.random.default_rng(0)
    text = labels @ rng.normal(size=(labels.shape[1], 24)) + 0.3 * rng.normal(size=(labels.shape[0], 24))
    for name, value in (("image.npy", image), ("text.npy", text.astype(np.float32)), ("labels.npy", labels)):
        np.save(root / name, value)
    source = import_source("dense", str(root / "image.npy"), str(root / "text.npy"), str(root / "labels.npy"),
                           text_kind="dense")
    build_source(source, "dense", root, cache_dir, FeatureOptions(progress=False))
    return cache_dir


def stopping_save(n: int, saves: list):
    """A ``Checkpoint.save`` that writes the checkpoint, notes its epoch in ``saves``, and at the
    n-th one stops the run as Ctrl-C would (after the file is written)."""
    original = train_module.Checkpoint.save

    def save(self, state):
        original(self, state)
        saves.append(state["epoch"])
        if len(saves) == n:
            raise KeyboardInterrupt
    return save


@contextmanager
def interrupted_after_first_checkpoint():
    """The first checkpoint written, then the run stops as Ctrl-C would stop it."""
    original = train_module.Checkpoint.save
    train_module.Checkpoint.save = stopping_save(1, [])
    try:
        yield
    finally:
        train_module.Checkpoint.save = original


@contextmanager
def counting_test_queries(cache: Cache, seen: list):
    """Every evaluation whose queries are the test queries, noted in ``seen`` (its number of queries)."""
    test_rows, original = cache.read("split/query"), train_module.retrieval

    def retrieval(method, data, queries, database, *args, **kwargs):
        if len(queries) == len(test_rows) and np.array_equal(queries, test_rows):
            seen.append(len(queries))
        return original(method, data, queries, database, *args, **kwargs)
    train_module.retrieval = retrieval
    try:
        yield
    finally:
        train_module.retrieval = original


def check_method(method: str, workdir: str | Path, bits: int = 16, overrides: dict | None = None) -> str:
    """Run the whole battery on ``method`` (a name, or ``FILE.py:Class``); returns its name.
    ``overrides``: config values that keep it small (e.g. narrower layers, fewer epochs)."""
    workdir = Path(workdir)
    name = register(method)
    cache_dir = caches(workdir)
    config = lambda dataset: load(dataset, overrides={"method": name, "bits": bits, "device": "cpu", "seed": 0,
                                                      **(overrides or {})})
    first = train(config("bow"), cache_dir, "bow", progress=False)
    again = train(config("bow"), cache_dir, "bow", progress=False)
    for side in ("database_image", "database_text", "query_image", "query_text"):
        assert np.array_equal(first["codes"][side], again["codes"][side]), f"{name}: {side} codes differ between two runs of one seed"
        codes = first["codes"][side]
        assert codes.shape[1] == bits, f"{name}: {side} codes have {codes.shape[1]} bits, asked {bits}"
        assert set(np.unique(codes)) <= {-1, 1}, f"{name}: {side} codes are not ±1"
    assert binarize(np.zeros((1, bits)))[0].tolist() == [1] * bits, "sign(0) must be +1"
    if first["model"].trainable:
        whole = run(config("bow"), cache_dir, "bow", workdir / "whole", progress=False)
        try:
            with interrupted_after_first_checkpoint():
                run(config("bow"), cache_dir, "bow", workdir / "resumed", progress=False)
        except KeyboardInterrupt:
            pass
        resumed = run(config("bow"), cache_dir, "bow", workdir / "resumed", progress=False)
        for side in ("database_image", "database_text"):
            assert np.array_equal(np.load(whole / "codes.npz")[side], np.load(resumed / "codes.npz")[side]), \
                f"{name}: a run resumed from its checkpoint ends with other {side} codes than an uninterrupted one"
    seen: list[int] = []
    with counting_test_queries(Cache.open(cache_dir / "dense"), seen):
        dense = train(config("dense"), cache_dir, "dense", progress=False,
                      on_validation=lambda epoch, score: seen.append(-1) if seen else None)
    assert -1 not in seen, f"{name}: the test queries were scored before a validation (during training)"
    assert 1 <= len(seen) <= 2, f"{name}: the test queries were scored {len(seen)} times (expected once, and the last epoch)"
    assert dense["result"]["text"]["kind"] == "dense", f"{name}: did not train on dense text"
    folder = run(config("bow"), cache_dir, "bow", workdir / "exported", progress=False)
    index = Index(export_index(folder, cache_dir))
    codes = np.load(folder / "codes.npz")
    rows = codes["database_index"][:8]
    got_i, got_t = Queries(index, "cpu").hash(image=index.rows_of(rows, "image"), text=index.rows_of(rows, "text"))
    assert np.array_equal(binarize(got_t), codes["database_text"][:8]), f"{name}: the exported index hashes texts differently"
    assert np.array_equal(binarize(got_i), codes["database_image"][:8]), f"{name}: the exported index hashes images differently"
    return name
