"""The code index of a run: its database codes, packed, searched by Hamming top-k.

An index folder (``<run>/index/``, written by ``export_index``) holds what a query needs and
nothing training needs:

    index.json          what it indexes: dataset, cache, rows, bits, method, encoder, vocabulary,
                        the run's model it was exported from (by sha256), the search kind
    codes.npz           database codes packed in uint64 words (image, text) and their cache rows
    model.safetensors   the method's hashing side only (a copy of the run's model file)
    <side>.shard<i>.faiss   approximate indexes, one per shard (``--index ivf|hnsw|mih``)

The folder is built beside the old one and swapped in whole, so a kill at any moment leaves the
old index or the new one. An index belongs to the weights it was exported from: when the run
is trained again, the index is refused until it is exported again. Turning a text, an image or a
cache row into a query code is ``queries``; what a hit shows is ``hits``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cfrh import __version__
from cfrh.codes import pack_codes
from cfrh.errors import CacheError, ConfigError
from cfrh.fsio import atomic_write_json, now, sha256_file
from cfrh_cache.store import Cache
from cfrh_search import ann
from cfrh_search.model import model_record
from cfrh_search.topk import hamming_topk
from cfrh_train.results import INDEX, MODEL, index_folder, read_result

MODALITIES = ("image", "text")


@dataclass(frozen=True)
class IndexSpec:
    """How the database codes are searched: ``kind`` (one of ``ann.KINDS``), its parameters
    (over the kind's defaults) and the number of shards."""

    kind: str = "exact"
    params: dict | None = None
    shards: int = 1


def export_index(run_folder: str | Path, cache_dir: str | Path, spec: IndexSpec = IndexSpec()) -> Path:
    """Write ``<run>/index/`` from a finished run folder (its result, codes and model), built in a
    temporary folder beside it and swapped in whole."""
    run_folder = Path(run_folder)
    result = read_result(run_folder)
    if not result.get("model") or not (run_folder / MODEL).is_file():
        raise CacheError(f"{run_folder}: no {MODEL} (a run of an older cfrh); train it again, then export")
    dataset, bits = result["dataset"], int(result["bits"])
    cache = Cache.open(Path(cache_dir) / dataset)
    codes = np.load(run_folder / "codes.npz")
    rows = np.asarray(codes["database_index"], np.int64)
    packed = {m: pack_codes(codes[f"database_{m}"]) for m in MODALITIES}
    ann.check_params(spec.kind, spec.params or {})
    if not 1 <= spec.shards <= len(rows):
        raise ConfigError(f"--shards {spec.shards}: expected 1..{len(rows)} (one shard per database row at most)")
    bounds = ann.shard_bounds(len(rows), spec.shards)
    params = {**ann.defaults(spec.kind, max(1, len(rows) // spec.shards), bits), **(spec.params or {})}
    final, tmp, old = run_folder / INDEX, run_folder / f".{INDEX}.tmp", run_folder / f".{INDEX}.old"
    if old.is_dir() and not final.exists():  # a kill between the two renames below: the old index goes back
        old.rename(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copyfile(run_folder / MODEL, tmp / MODEL)
    np.savez(tmp / "codes.npz", **packed, rows=rows)
    if spec.kind != "exact":
        for m in MODALITIES:
            for i, (a, b) in enumerate(bounds):
                ann.save(ann.build(packed[m][a:b], spec.kind, params, seed=int(result["seed"])),
                         tmp / f"{m}.shard{i}.faiss")
    attrs = cache.attrs
    meta = {"dataset": dataset, "method": result["method"], "bits": bits, "seed": result["seed"], "n": len(rows),
            "model": model_record(result),
            "text": result["config"].get("text"),
            "text_encoder": attrs.get("text_encoders", {}).get(result["config"].get("text") or "", None),
            "cache": str(cache.path.resolve()), "cache_created": attrs.get("created"),
            "encoder": {**attrs.get("encoders", {}).get(result["encoder"]["tag"], {}), "tag": result["encoder"]["tag"]},
            "vocabulary": attrs.get("vocabulary", {}).get("words") or None,
            "tokenizer": attrs.get("vocabulary", {}).get("tokenizer"), "cfrh_version": __version__,
            "created": now(), "ann": {"kind": spec.kind, "params": params, "shards": bounds}}
    meta["encoder"].pop("encode_stats", None)
    atomic_write_json(tmp / "index.json", meta)  # last: an index without it is not finished
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


@dataclass
class Hit:
    row: int  # the cache row
    distance: int
    score: float | None = None  # the re-ranking score, where re-ranked


class Index:
    """A loaded index folder (or the run folder holding it): codes, shards and top-k search."""

    def __init__(self, folder: str | Path):
        self.folder = index_folder(folder)
        if not (self.folder / "index.json").is_file():
            raise CacheError(f"{self.folder}: no index.json; write an index with `cfrh-train ... --export` "
                             "(or `cfrh export RUN`)")
        self.meta = json.loads((self.folder / "index.json").read_text())
        if "model" not in self.meta or "ann" not in self.meta or not (self.folder / MODEL).is_file():
            raise CacheError(f"{self.folder}: no {MODEL} (an index of an older layout); {self.redo}")
        self._check_fresh()
        codes = np.load(self.folder / "codes.npz")
        self.codes = {m: codes[m] for m in MODALITIES}
        self.rows = codes["rows"]
        self.bits = int(self.meta["bits"])
        self._cache = None
        self._shards: dict[str, list] = {}

    @property
    def redo(self) -> str:
        """What to do about an index this cfrh cannot use."""
        return (f"the index was written by cfrh {self.meta.get('cfrh_version', '?')}; this is cfrh {__version__}: "
                "write it again with `cfrh-train ... --export` (or `cfrh export RUN`)")

    @property
    def title(self) -> str:
        return f"{self.meta['method']} {self.bits} bits · {self.meta['dataset']}"

    def _check_fresh(self) -> None:
        """An index inside a run folder answers only for the training that folder holds now (the
        same model file, from the same config)."""
        run = self.folder.parent
        if self.folder.name != INDEX or not (run / MODEL).is_file():
            return
        same_config = (run / "result.json").is_file() and read_result(run)["config"] == self.meta["model"]["config"]
        if not same_config or self.meta["model"].get("sha256") != sha256_file(run / MODEL):
            raise CacheError(f"{self.folder}: exported from an earlier training of {self.folder.parent} (its model "
                             f"has changed since); export it again: cfrh export {self.folder.parent}")

    def nearest(self, code: np.ndarray, target: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions in the index and distances of the k nearest ``target`` codes of each query,
        shard by shard and merged (ties by position), by the index's kind."""
        if target not in MODALITIES:
            raise ConfigError(f"target {target!r}: expected image or text")
        q = pack_codes(np.atleast_2d(code))
        spec = self.meta["ann"]
        k = min(k, len(self.rows))
        if spec["kind"] == "exact":
            found = [hamming_topk(q, self.codes[target][a:b], self.bits, k) for a, b in spec["shards"]]
            return ann.merge(np.concatenate([i + a for (a, _), (i, _) in zip(spec["shards"], found)], 1),
                             np.concatenate([d for _, d in found], 1), k)
        return ann.search(self.shards(target), q, k)

    def shards(self, target: str) -> list[tuple[int, object]]:
        """(first position, faiss index) of each shard of ``target`` codes, loaded once."""
        if target not in self._shards:
            spec = self.meta["ann"]
            self._shards[target] = [(a, ann.load(self.folder / f"{target}.shard{i}.faiss", spec["kind"], spec["params"]))
                                    for i, (a, _) in enumerate(spec["shards"])]
        return self._shards[target]

    def search(self, code: np.ndarray, target: str, k: int = 10) -> list[list[Hit]]:
        """Hamming top-k of real or ±1 query codes (n, K) among the database's ``target`` codes."""
        ids, dists = self.nearest(code, target, k)
        return [[Hit(int(self.rows[i]), int(d)) for i, d in zip(row_i, row_d)] for row_i, row_d in zip(ids, dists)]

    def cache(self) -> Cache:
        """The cache the index was built from; refused if it has been rebuilt since (rows may differ)."""
        if self._cache is None:
            cache = Cache.open(self.meta["cache"])
            if cache.attrs.get("created") != self.meta["cache_created"]:
                raise CacheError(f"{cache.path}: rebuilt ({cache.attrs.get('created')}) after this index was written "
                                 f"({self.meta['cache_created']}); retrain with --export")
            self._cache = cache
        return self._cache

    def check_rows(self, rows) -> np.ndarray:
        """Cache rows as given (``--row``): each in 0..n-1 (no negative counting from the end)."""
        rows = np.asarray(rows, np.int64)
        n = int(self.cache().attrs["n"])
        bad = rows[(rows < 0) | (rows >= n)]
        if bad.size:
            raise ConfigError(f"--row {int(bad[0])}: out of range; the cache has rows 0..{n - 1}")
        return rows

    def rows_of(self, rows, modality: str) -> np.ndarray:
        """float32 image features or text vectors of some cache rows, reading only those rows."""
        cache = self.cache()
        rows = self.check_rows(rows)
        if modality == "text":
            return cache.text_rows(rows, self.meta.get("text"))
        return np.asarray(cache.array(f"image/{self.meta['encoder']['tag']}").get_orthogonal_selection((rows,)),
                          np.float32)
