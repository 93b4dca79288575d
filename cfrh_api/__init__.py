"""cfrh from Python, as a notebook uses it: the functions the commands call, in one place, typed.

    import cfrh_api as cfrh
    data = cfrh.open_cache("mirflickr")                 # features, texts, labels, split
    run = cfrh.train("mirflickr", bits=32)              # a run folder, trained (or reused)
    run.metrics["i2t"]["map@50"], run.codes["database_image"]
    search = cfrh.open_search(run.folder)               # its index (exported if need be)
    search.text("red circle", k=10)                     # hits: cache row, Hamming distance, labels, text

A package above the stages, like ``cfrh_cli`` (the commands) and ``cfrh_testing`` (the kit).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cfrh_cache.options import FeatureOptions
from cfrh_cache.pipeline import build_features
from cfrh_search.hits import described_hits
from cfrh_search.index import Index, export_index
from cfrh_search.queries import Queries
from cfrh_train.config import load
from cfrh_train.data import CachedData, load_cache
from cfrh_train.results import has_index, read_result
from cfrh_train.train import run as train_run

__all__ = ["CachedData", "FeatureOptions", "Run", "Search", "build_cache", "load_run", "open_cache", "open_search",
           "train"]


def build_cache(dataset: str, root: str | Path, cache_dir: str | Path = "cache", **options) -> Path:
    """Stage 1 (``cfrh-cache features``): read ``dataset`` from ``root`` and write its cache;
    ``options`` are ``FeatureOptions``' (model, pretrained, device, protocol, seed, …)."""
    return build_features(dataset, root, cache_dir, FeatureOptions(**options)).cache


def open_cache(dataset: str, cache_dir: str | Path = "cache", encoder: str | None = None,
               text: str | None = None) -> CachedData:
    """A cache's arrays in memory: ``image`` (N, D), ``text`` (N, V), ``labels`` (N, C), ``split``
    (query, database, train, val row numbers), ``attrs`` (its provenance)."""
    return load_cache(cache_dir, dataset, encoder, text)


@dataclass
class Run:
    """A finished run folder: its record, metrics, config and codes."""

    folder: Path
    result: dict

    @property
    def metrics(self) -> dict:
        """``{"i2t": {...}, "t2i": {...}}``: mAP@k, mAP@all, tie-averaged mAP, P@k."""
        return self.result["metrics"]

    @property
    def config(self) -> dict:
        return self.result["config"]

    @property
    def codes(self) -> dict[str, np.ndarray]:
        """±1 codes (``query_image``, ``query_text``, ``database_image``, ``database_text``) and
        the cache rows they belong to (``query_index``, ``database_index``)."""
        with np.load(self.folder / "codes.npz") as codes:
            return {k: codes[k] for k in codes.files}


def load_run(folder: str | Path) -> Run:
    """A run folder written by ``train`` (or ``cfrh-train``)."""
    return Run(Path(folder), read_result(folder))


def train(dataset: str, cache_dir: str | Path = "cache", runs_dir: str | Path = "runs", config: str | Path | None = None,
          progress: bool = False, **overrides) -> Run:
    """``cfrh-train``: train on a cache (``overrides``: any config key, e.g. ``method="jdsh", bits=64``),
    select on validation, score the test queries once, write the run folder."""
    return load_run(train_run(load(dataset, config, overrides), cache_dir, dataset, runs_dir, progress=progress))


@dataclass
class Search:
    """A run's search index with its query side: texts, images or cache rows in, hits out."""

    index: Index
    queries: Queries

    def _hits(self, code: np.ndarray, target: str, k: int) -> list[dict]:
        return described_hits(self.index, self.index.search(code, target, k)[0])

    def text(self, text: str, k: int = 10, target: str = "image") -> list[dict]:
        """The k nearest ``target`` items of a free text (BoW through the cache's vocabulary)."""
        return self._hits(self.queries.text_code(text), target, k)

    def image(self, path: str | Path, k: int = 10, target: str = "text") -> list[dict]:
        """The k nearest ``target`` items of an image file (through the cache's own encoder)."""
        return self._hits(self.queries.image_code(path)[0], target, k)

    def row(self, row: int, k: int = 10, modality: str = "image", target: str | None = None) -> list[dict]:
        """The k nearest items of a cache row's image (or text)."""
        code = self.queries.row_code(row, modality)[0]
        return self._hits(code, target or ("text" if modality == "image" else "image"), k)


def open_search(run_folder: str | Path, cache_dir: str | Path = "cache", device: str = "auto") -> Search:
    """A run's search index, exported first if the run has none (``cfrh export RUN``)."""
    if not has_index(run_folder):
        export_index(run_folder, cache_dir)
    index = Index(run_folder)
    return Search(index, Queries(index, device))
