"""Stage 1 end to end: reader → (texts, labels, split) → encoder → store.

The image loop is clip-retrieval's shape: a reader (DataLoader workers) yields batches, the
encoder maps them, the writer stores whole chunks; each role is timed, so the report says
where the time went. Chunks are the unit of resumption and of distribution: ``rank``/``ranks``
give each process of a torchrun job a disjoint set of chunks of the same store.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from cfrh_cache.encode import Encoder, batch_loader, load_encoder, sha256_file
from cfrh_cache.readers import Source, read_dataset
from cfrh_cache.splits import make_split
from cfrh_cache.store import CHUNK_ROWS, Cache, CacheError, ChunkedArray
from cfrh_cache.text import bag_of_words, build_vocabulary

log = logging.getLogger(__name__)


@dataclass
class EncodeStats:
    images: int = 0
    read_s: float = 0.0
    encode_s: float = 0.0
    write_s: float = 0.0
    wall_s: float = 0.0
    skipped: bool = False

    def as_dict(self) -> dict:
        rate = self.images / self.wall_s if self.wall_s else 0.0
        shares = {k: round(getattr(self, k) / self.wall_s, 3) if self.wall_s else 0.0
                  for k in ("read_s", "encode_s", "write_s")}
        return {"images": self.images, "images_per_s": round(rate, 2), "wall_s": round(self.wall_s, 3),
                "read_s": round(self.read_s, 3), "encode_s": round(self.encode_s, 3),
                "write_s": round(self.write_s, 3), "share": shares, "skipped": self.skipped}


@dataclass
class FeatureReport:
    cache: Path
    dataset: str
    n: int
    encoder_tag: str
    stats: EncodeStats
    written: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} img/s" if speed else "– img/s", style="cyan")


def build_features(dataset: str, root: str | Path, cache_dir: str | Path = "cache", model: str = "ViT-B-32",
                   pretrained: str | None = "openai", batch_size: int = 256, workers: int = 2,
                   device: str = "auto", protocol: str = "djsrh", seed: int = 0, vocab_size: int = 2000,
                   min_df: int = 2, resplit: bool = False, chunk_rows: int = CHUNK_ROWS, progress: bool = True,
                   rank: int = 0, ranks: int = 1, barrier=None, max_chunks: int | None = None) -> FeatureReport:
    """Write (or finish) ``cache_dir/<dataset>``. Every step skips what a previous run completed.

    ``max_chunks`` stops after that many image chunks (to test resumption); ``barrier`` is called
    between the phases of a multi-process run so rank 0 alone writes the shared arrays.
    """
    source = read_dataset(dataset, root)
    path = Path(cache_dir) / dataset
    written: list[str] = []
    encoder = load_encoder(model, pretrained, device, seed)
    name = f"image/{encoder.tag}"
    if rank == 0:  # the shared arrays, and the feature array itself, exist before any rank encodes
        cache = Cache.create(path, dataset, source.n)
        cache.update_attrs(root=str(Path(root).resolve()))  # where search tools find paths and raw texts
        written += _write_tables(cache, source, protocol, seed, vocab_size, min_df, resplit)
        if not cache.has(name):
            cache.chunked(name, (source.n, encoder.dim), np.float16, {}, chunk_rows)
    if barrier:
        barrier()
    cache = Cache.open(path, mode="a")
    target = None if cache.has(name) else cache.chunked(name, (source.n, encoder.dim), np.float16, {}, chunk_rows)
    stats = encode_images(target, source, encoder, batch_size, workers, progress, rank, ranks, max_chunks)
    if barrier:
        barrier()
    if rank == 0 and target is not None and not target.pending():
        target.finish(encoder.attrs)
        encoders = cache.attrs.get("encoders", {})
        encoders[encoder.tag] = {**encoder.attrs, "encode_stats": stats.as_dict(), "batch_size": batch_size,
                                 "device": str(encoder.device), "ranks": ranks}
        cache.update_attrs(encoders=encoders)
        written.append(name)
    return FeatureReport(path, dataset, source.n, encoder.tag, stats, written, source.notes)


def _write_tables(cache: Cache, source: Source, protocol: str, seed: int, vocab_size: int, min_df: int,
                  resplit: bool) -> list[str]:
    """Labels, texts, split and provenance: small, written whole, each skipped once complete."""
    written = []
    cache.update_attrs(source_files=_source_files(source, cache.attrs.get("source_files", [])),
                       source_notes=source.notes)
    if not cache.has("labels"):
        cache.write("labels", source.labels, {"label_names": source.label_names or []})
        written.append("labels")
    elif not np.array_equal(cache.read("labels"), source.labels):
        raise CacheError(f"{cache.path}: stored labels differ from {source.files}; the source changed since the "
                         "cache was written: use another --cache-dir or delete the cache")
    if not (cache.has("text/bow") or cache.has("text/bow_csr/indptr")):
        if source.bow is not None:
            cache.write_bow(source.bow, {"source": "shipped with the dataset", "vocabulary": source.vocabulary or []})
            cache.update_attrs(vocabulary={"source": "shipped", "size": int(source.bow.shape[1]),
                                           "words": source.vocabulary or []})
        else:
            words = build_vocabulary(source.texts, vocab_size, min_df)
            bow = bag_of_words(source.texts, words)
            empty = np.flatnonzero(np.diff(bow.indptr) == 0)
            if empty.size:
                log.warning("%d texts have no vocabulary word (rows %s…)", empty.size, empty[:5].tolist())
            cache.write_bow(bow, {"source": "built here", "vocabulary": words})
            cache.update_attrs(vocabulary={"source": "built", "size": len(words), "min_df": min_df,
                                           "max_size": vocab_size, "words": words,
                                           "rows_without_words": int(empty.size)})
        written.append("text")
    stored = cache.attrs.get("split")
    if stored and all(cache.has(f"split/{k}") for k in ("query", "database", "train", "val")):
        if (stored["protocol"], stored["seed"]) == (protocol, seed):
            return written
        if not resplit:
            raise CacheError(f"{cache.path}: holds split {stored['protocol']}/seed {stored['seed']}, you asked for "
                             f"{protocol}/seed {seed}; pass --resplit to replace it (runs on the old split stay valid "
                             "only for it) or use another --cache-dir")
    split = make_split(source.labels, source.dataset, protocol, seed, source.fixed_split, source.reference_n)
    for key in ("query", "database", "train", "val"):
        cache.write(f"split/{key}", getattr(split, key).astype(np.int64))
    cache.update_attrs(split=split.describe())
    written.append("split")
    return written


def _source_files(source: Source, previous: list[dict]) -> list[dict]:
    """Name, size and sha256 of each source file; a checksum is reused while size and mtime agree."""
    known = {(p["path"], p["size"], p.get("mtime")): p["sha256"] for p in previous}
    out = []
    for f in source.files:
        stat = f.stat()
        key = (str(f.resolve()), stat.st_size, stat.st_mtime)
        sha = known.get(key) or sha256_file(f)
        out.append({"name": f.name, "path": key[0], "size": stat.st_size, "mtime": stat.st_mtime, "sha256": sha})
    if source.images.kind == "file":
        sizes = [p.stat().st_size for p in source.images.paths]
        out.append({"name": "<image files>", "count": len(sizes), "size": int(sum(sizes))})
    return out


def encode_images(target: ChunkedArray | None, source: Source, encoder: Encoder, batch_size: int, workers: int,
                  progress: bool, rank: int = 0, ranks: int = 1, max_chunks: int | None = None) -> EncodeStats:
    """Encode this rank's unfinished chunks of ``target`` (None: already complete); chunks are written whole."""
    stats = EncodeStats()
    if target is None:
        stats.skipped = True
        return stats
    chunks = target.pending(ranks, rank)[:max_chunks]
    ranges, owner = [], []
    for chunk in chunks:
        start, stop = target.rows(chunk)
        for s in range(start, stop, batch_size):
            ranges.append((s, min(s + batch_size, stop)))
            owner.append(chunk)
    total = sum(b - a for a, b in ranges)
    columns = [TextColumn(f"[bold]{encoder.tag}[/]" + (f" rank {rank}" if ranks > 1 else "")), BarColumn(),
               MofNCompleteColumn(), RateColumn(), TimeRemainingColumn()]
    t0 = time.perf_counter()
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("encode", total=total)
        buffer: list[np.ndarray] = []
        loader = iter(batch_loader(source.images, ranges, encoder, workers))
        for i, chunk in enumerate(owner):
            t = time.perf_counter()
            pixels = next(loader)
            stats.read_s += time.perf_counter() - t
            t = time.perf_counter()
            features = encoder(pixels)
            _check_finite(features, ranges[i], source.dataset)
            buffer.append(features)
            stats.encode_s += time.perf_counter() - t
            if i + 1 == len(owner) or owner[i + 1] != chunk:
                t = time.perf_counter()
                target.write_chunk(chunk, np.concatenate(buffer))
                buffer = []
                stats.write_s += time.perf_counter() - t
            stats.images += len(pixels)
            bar.advance(task, len(pixels))
    stats.wall_s = time.perf_counter() - t0
    return stats


def _check_finite(features: np.ndarray, rows: tuple[int, int], dataset: str) -> None:
    bad = ~np.isfinite(features).all(axis=1)
    if bad.any():
        where = (np.flatnonzero(bad) + rows[0])[:10].tolist()
        raise FloatingPointError(f"{dataset}: the encoder produced NaN/Inf features for rows {where}; "
                                 "check those images (all-black/corrupt?) and the weights; nothing was written "
                                 "for this chunk")

