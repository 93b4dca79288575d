"""Stage 1's encoding loop in clip-retrieval's shape: a reader yields batches (DataLoader workers
decoding and resizing images, or rows of texts or precomputed features), a mapper turns them
into features (the encoder), a writer stores whole chunks, and the runner times each role per
batch, so the report says where the time went. Chunks are the unit of resumption and of
distribution: ``rank``/``ranks`` give each process of a torchrun job a disjoint set of chunks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from cfrh.encoders import Encoder
from cfrh.errors import DataError
from cfrh_cache.loader import batch_loader
from cfrh_cache.readers import Source
from cfrh_cache.store import ChunkedArray


@dataclass
class EncodeStats:
    images: int = 0
    read_s: float = 0.0
    encode_s: float = 0.0
    write_s: float = 0.0
    wall_s: float = 0.0
    skipped: bool = False
    first_batch_s: float = 0.0  # the first batch, whole: worker start-up, first kernels
    first_batch: int = 0  # its rows

    def as_dict(self) -> dict:
        rate = self.images / self.wall_s if self.wall_s else 0.0
        rest_s = self.wall_s - self.first_batch_s
        steady = (self.images - self.first_batch) / rest_s if rest_s > 0 and self.images > self.first_batch else rate
        shares = {k: round(getattr(self, k) / self.wall_s, 3) if self.wall_s else 0.0
                  for k in ("read_s", "encode_s", "write_s")}
        return {"images": self.images, "images_per_s": round(rate, 2), "wall_s": round(self.wall_s, 3),
                "read_s": round(self.read_s, 3), "encode_s": round(self.encode_s, 3),
                "write_s": round(self.write_s, 3), "share": shares, "first_batch_s": round(self.first_batch_s, 3),
                "steady_images_per_s": round(steady, 2), "skipped": self.skipped}


class RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} img/s" if speed else "– img/s", style="cyan")


@dataclass
class Precomputed:
    """The mapper for image features computed elsewhere (``FeatureRows``): stores them as float16."""

    tag: str
    dim: int
    attrs: dict
    device: str = "none (precomputed)"

    def __call__(self, rows) -> np.ndarray:
        return np.asarray(rows, np.float32).astype(np.float16)


class ChunkWriter:
    """The writer: gathers a chunk's batches in order and stores the chunk whole, then flags it
    done (a chunk is the unit of resumption and of distribution)."""

    def __init__(self, target: ChunkedArray):
        self.target, self.chunk, self.parts = target, None, []

    def add(self, chunk: int, features: np.ndarray) -> None:
        if self.chunk is not None and chunk != self.chunk:
            raise RuntimeError(f"chunk {self.chunk} left unfinished")  # a planning bug, not a user error
        self.chunk = chunk
        self.parts.append(features)
        start, stop = self.target.rows(chunk)
        if sum(len(p) for p in self.parts) == stop - start:
            self.target.write_chunk(chunk, np.concatenate(self.parts))
            self.chunk, self.parts = None, []


def plan_batches(target: ChunkedArray, batch_size: int, rank: int = 0, ranks: int = 1,
                 max_chunks: int | None = None) -> list[tuple[int, int, int]]:
    """(chunk, start row, stop row) of every batch of this rank's unfinished chunks, in order."""
    plan = []
    for chunk in target.pending(ranks, rank)[:max_chunks]:
        start, stop = target.rows(chunk)
        plan += [(chunk, s, min(s + batch_size, stop)) for s in range(start, stop, batch_size)]
    return plan


def encode_images(target: ChunkedArray | None, source: Source, encoder: Encoder | Precomputed, batch_size: int,
                  workers: int, progress: bool, rank: int = 0, ranks: int = 1,
                  max_chunks: int | None = None) -> EncodeStats:
    """Image features: the reader is the DataLoader workers reading and resizing row ranges (or the
    precomputed rows themselves), the mapper the encoder. ``target`` None: complete already."""
    if target is None:
        return EncodeStats(skipped=True)
    plan = plan_batches(target, batch_size, rank, ranks, max_chunks)
    if source.images.kind == "features":  # nothing to decode: the rows are the features
        reader = (source.images.read(a, b) for _, a, b in plan)
    else:
        reader = iter(batch_loader(source.images, [(a, b) for _, a, b in plan], encoder, workers))
    label = f"[bold]{encoder.tag}[/]" + (f" rank {rank}" if ranks > 1 else "")
    return run_chunks(target, plan, reader, encoder, label, progress, source.dataset)


def encode_texts(target: ChunkedArray | None, texts: list[str], encoder: Encoder, batch_size: int, progress: bool,
                 dataset: str, max_chunks: int | None = None) -> EncodeStats:
    """Text features of a CLIP text tower, chunk by chunk like the images (resumable)."""
    if target is None:
        return EncodeStats(skipped=True)
    plan = plan_batches(target, batch_size, max_chunks=max_chunks)
    reader = (texts[a:b] for _, a, b in plan)
    return run_chunks(target, plan, reader, encoder.encode_texts, f"[bold]text {encoder.tag}[/]", progress, dataset)


def run_chunks(target: ChunkedArray, plan: list[tuple[int, int, int]], reader, mapper, label: str, progress: bool,
               dataset: str) -> EncodeStats:
    """The runner (clip-retrieval's shape): the reader feeds the mapper, whose features the writer
    stores chunk by chunk; each role is timed per batch, so the report says where the time went."""
    stats = EncodeStats()
    writer = ChunkWriter(target)
    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn(), RateColumn(), TimeRemainingColumn()]
    t0 = time.perf_counter()
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("encode", total=sum(b - a for _, a, b in plan))
        for chunk, start, stop in plan:
            t = time.perf_counter()
            batch = next(reader)
            t1 = time.perf_counter()
            features = mapper(batch)
            _check_finite(features, (start, stop), dataset)
            t2 = time.perf_counter()
            writer.add(chunk, features)
            t3 = time.perf_counter()
            stats.read_s += t1 - t
            stats.encode_s += t2 - t1
            stats.write_s += t3 - t2
            stats.images += len(batch)
            if not stats.first_batch:
                stats.first_batch, stats.first_batch_s = len(batch), t3 - t
            bar.advance(task, len(batch))
    stats.wall_s = time.perf_counter() - t0
    return stats


def _check_finite(features: np.ndarray, rows: tuple[int, int], dataset: str) -> None:
    bad = ~np.isfinite(features).all(axis=1)
    if bad.any():
        where = (np.flatnonzero(bad) + rows[0])[:10].tolist()
        raise DataError(f"{dataset}: the encoder produced NaN/Inf features for rows {where}; "
                                 "check those images (all-black/corrupt?) and the weights; nothing was written "
                                 "for this chunk")
