"""Stage 1 end to end: reader → (texts, labels, split) → encoder → store.

The image loop is clip-retrieval's shape: a reader (DataLoader workers) yields batches, the
encoder maps them, the writer stores whole chunks; each role is timed, so the report says
where the time went. Chunks are the unit of resumption and of distribution: ``rank``/``ranks``
give each process of a torchrun job a disjoint set of chunks of the same store.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from cfrh.devices import check_device_name
from cfrh.encoders import Encoder, load_encoder
from cfrh.errors import CacheError, ConfigError, DataError
from cfrh.fsio import disk_errors, sha256_file
from cfrh.images import DECODE
from cfrh.text import TOKENIZER, bag_of_words, build_vocabulary
from cfrh_cache.loader import batch_loader
from cfrh_cache.readers import Source, read_dataset
from cfrh_cache.splits import PROTOCOLS, make_split
from cfrh_cache.store import CHUNK_ROWS, Cache, ChunkedArray

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


@dataclass(frozen=True)
class FeatureOptions:
    """What a user chooses for stage 1 (``cfrh-cache features``'s options), checked on creation."""

    model: str = "ViT-B-32"
    pretrained: str | None = "openai"
    batch_size: int = 256
    workers: int = 2
    device: str = "auto"
    protocol: str = "djsrh"
    seed: int = 0
    vocab_size: int = 2000
    min_df: int = 2
    resplit: bool = False
    rebuild: bool = False
    chunk_rows: int = CHUNK_ROWS
    progress: bool = True
    image_layout: str | None = None
    text_encoder: bool = False  # also CLIP text embeddings of raw texts: text/<model>__<pretrained>

    def __post_init__(self) -> None:
        for name, low in (("batch_size", 1), ("workers", 0), ("vocab_size", 1), ("min_df", 1), ("chunk_rows", 1),
                          ("seed", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"--{name.replace('_', '-')} {value!r}: expected an integer ≥ {low}")
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"--protocol {self.protocol!r}: expected one of {', '.join(PROTOCOLS)}")
        check_device_name(self.device)

    def vocabulary_params(self) -> dict:
        return {"max_size": self.vocab_size, "min_df": self.min_df, "tokenizer": TOKENIZER}


def build_features(dataset: str, root: str | Path, cache_dir: str | Path = "cache",
                   options: FeatureOptions | None = None, *, rank: int = 0, ranks: int = 1, barrier=None,
                   max_chunks: int | None = None) -> FeatureReport:
    """Write (or finish) ``cache_dir/<dataset>``. Every step skips what a previous run completed
    from the same inputs; an array made from other inputs (a changed file, other vocabulary
    options, other weights) is refused, or with ``rebuild`` made anew in a staging folder that
    replaces the cache only once it is complete (so a failed rebuild loses nothing).

    ``max_chunks`` stops after that many image chunks (to test resumption); ``barrier`` is called
    between the phases of a multi-process run so rank 0 alone writes the shared arrays.
    """
    opts = options or FeatureOptions()
    with disk_errors(Path(cache_dir) / dataset):
        source = read_dataset(dataset, root, opts.image_layout)
        return build_source(source, dataset, root, cache_dir, opts, rank=rank, ranks=ranks, barrier=barrier,
                            max_chunks=max_chunks)


@dataclass
class Precomputed:
    """The mapper for image features computed elsewhere (``FeatureRows``): stores them as float16."""

    tag: str
    dim: int
    attrs: dict
    device: str = "none (precomputed)"

    def __call__(self, rows) -> np.ndarray:
        return np.asarray(rows, np.float32).astype(np.float16)


def image_mapper(source: Source, opts: FeatureOptions) -> Encoder | Precomputed:
    """What turns the source's images into features: the image encoder, or nothing to run."""
    if source.images.kind == "features":
        rows = source.images
        return Precomputed(rows.tag, int(rows.features.shape[1]),
                           {"model": "precomputed", "pretrained": "file", "origin": rows.origin,
                            "dim": int(rows.features.shape[1]), "dtype": "float16"})
    return load_encoder(opts.model, opts.pretrained, opts.device, opts.seed)


def build_source(source: Source, dataset: str, root: str | Path, cache_dir: str | Path, opts: FeatureOptions, *,
                 rank: int = 0, ranks: int = 1, barrier=None, max_chunks: int | None = None) -> FeatureReport:
    """``build_features`` for a source already read (a reader's, or ``cfrh-cache import``'s)."""
    with disk_errors(Path(cache_dir) / dataset):
        return _build(source, dataset, root, Path(cache_dir), opts, rank, ranks, barrier, max_chunks)


def _build(source: Source, dataset: str, root: str | Path, cache_dir: Path, opts: FeatureOptions, rank: int,
           ranks: int, barrier, max_chunks: int | None) -> FeatureReport:
    final = Path(cache_dir) / dataset
    encoder = image_mapper(source, opts)
    name = f"image/{encoder.tag}"
    files = _source_files(source, _previous_files(final))
    wanted = made_from(source, files, opts, encoder)
    path, written = final, []
    if rank == 0:
        stale = _stale(final, source.n, dataset, wanted)
        if stale and not opts.rebuild:
            raise CacheError(f"{final}: " + "; ".join(stale) + ". Pass --rebuild to rebuild what changed (the cache "
                             "stays as it is until the rebuild is complete), or use another --cache-dir")
        if opts.rebuild:
            path = _staging(final, source.n, dataset, wanted)
        cache = Cache.create(path, dataset, source.n)
        cache.update_attrs(root=str(Path(root).resolve()), source_files=files, source_notes=source.notes,
                           images=source.images.place())
        written += _write_tables(cache, source, opts, wanted)
        if opts.text_encoder:
            written += _write_text_features(cache, source, encoder, opts, wanted, max_chunks)
        _feature_array(cache, name, (source.n, encoder.dim), wanted[name], opts.chunk_rows)
    if barrier:
        barrier()
    path = _staging_path(final) if opts.rebuild else final
    cache = Cache.open(path, mode="a")
    target = _feature_array(cache, name, (source.n, encoder.dim), wanted[name], opts.chunk_rows)
    stats = encode_images(target, source, encoder, opts.batch_size, opts.workers, opts.progress, rank, ranks,
                          max_chunks)
    if barrier:
        barrier()
    if rank == 0 and target is not None and not target.pending():
        target.finish(encoder.attrs)
        encoders = cache.attrs.get("encoders", {})
        encoders[encoder.tag] = {**encoder.attrs, "encode_stats": stats.as_dict(), "batch_size": opts.batch_size,
                                 "device": str(encoder.device), "ranks": ranks}
        cache.update_attrs(encoders=encoders)
        written.append(name)
    if rank == 0 and opts.rebuild and cache.has(name):
        _swap(path, final)
    return FeatureReport(final, dataset, source.n, encoder.tag, stats, written, source.notes)


def made_from(source: Source, files: list[dict], opts: FeatureOptions, encoder: Encoder) -> dict[str, dict]:
    """What each array of the cache is made from: the checksums of its source files and the
    options that shape it. Stored in the array's attributes; an array is reused only while equal."""
    sha = {f["path"]: f["sha256"] for f in files}
    role = lambda r: {Path(p).name: sha[str(Path(p).resolve())] for p in source.files_for(r)}
    images = {"<image files>": sha["<image files>"]} if source.images.kind == "file" else role("images")
    decode = {"file": DECODE, "array": "array (uint8)", "features": "precomputed"}[source.images.kind]
    labels = {"files": role("labels")}
    texts = {"files": role("texts"), **({} if source.bow is not None else {"vocabulary": opts.vocabulary_params()})}
    records = {}
    if opts.text_encoder:
        records[f"text/{encoder.tag}"] = {"texts": role("raw"), "encoder": _encoder_identity(encoder.attrs)}
    return {**records, "labels": labels, "text": texts, "raw": {"texts": role("raw"), "images": images},
            "split": {"labels": labels, "protocol": opts.protocol, "seed": opts.seed},
            f"image/{encoder.tag}": {"images": images, "encoder": _encoder_identity(encoder.attrs),
                                     "decode": decode}}


def _encoder_identity(attrs: dict) -> dict:
    keep = ("model", "pretrained", "weights_sha256", "random_init_seed", "preprocessing", "dim", "origin")
    return {k: attrs[k] for k in keep if k in attrs}


ARRAYS_OF = {"labels": ("labels",), "text": Cache.TEXT_ARRAYS,
             "split": ("split/query", "split/database", "split/train", "split/val"),
             "raw": ("text/raw/utf8", "text/raw/offsets", "meta/image_path/utf8", "meta/image_path/offsets")}


def _arrays_of(key: str) -> tuple[str, ...]:
    return ARRAYS_OF.get(key, (key,))


def _describe_change(old: dict | None, new: dict, prefix: str = "") -> str:
    """The first difference between two provenance records, in words."""
    if old is None:
        return "it was made by an older cfrh that did not record its inputs"
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            return _describe_change(a, b, f"{prefix}{key} ")
        short = lambda v: (v[:12] + "…") if isinstance(v, str) and len(v) == 64 else v
        return f"{prefix}{key}: {short(a)} then, {short(b)} now"
    return "its inputs differ"


def _review(cache: Cache, wanted: dict[str, dict]) -> tuple[list[str], list[str]]:
    """The complete arrays that were made from these inputs, and why the others were not. Other
    encoders' features count as valid while made from the same images. The raw texts and image
    paths are copies of the source, rewritten whenever it changed: they never block a run."""
    valid, stale = [], []
    images = next(record["images"] for key, record in wanted.items() if key.startswith("image/"))
    for name in cache.names(complete_only=True):
        key = next((k for k in wanted if name in _arrays_of(k)), None)
        if key == "raw":
            continue
        record = cache.array(name).attrs.get("made_from")
        if record is None and key is not None:  # written before cfrh 0.3: read its record off the cache
            record = _legacy_record(cache, key, name, wanted)
            if record == wanted[key]:
                cache.array(name).attrs.update({"made_from": record})  # provenance only; the data is untouched
        if key is not None:
            ok = record == wanted[key] or (key == "split" and _only_protocol_changed(record, wanted[key]))
            why = _describe_change(record, wanted[key])
        elif name.startswith("image/") and record is not None and "imported" in record:
            continue  # features imported beside the cache's own: their own files are their provenance
        elif name.startswith("image/"):
            ok = record is not None and record.get("images") == images
            why = _describe_change(None if record is None else record.get("images"), images, "images ")
        elif name.startswith("text/"):  # another text encoder's features: valid while the texts are the same
            ok = record is not None and record.get("texts") == wanted["raw"]["texts"]
            why = _describe_change(None if record is None else record.get("texts"), wanted["raw"]["texts"], "texts ")
        else:
            continue
        (valid if ok else stale).append(name if ok else f"{name} was made from other inputs ({why})")
    return valid, stale


def _legacy_record(cache: Cache, key: str, name: str, wanted: dict[str, dict]) -> dict | None:
    """What an array of a cache written before cfrh 0.3 (no ``made_from``) was made from, as far as
    the cache's own attributes tell: its files' checksums, the vocabulary options, the split's
    protocol and seed, the encoder's attributes. What they do not tell (the checksum of image
    files, the tokenizer) stays unknown, so such an array counts as made from other inputs."""
    attrs = cache.attrs
    sha = {f["name"]: f.get("sha256") for f in attrs.get("source_files", [])}
    files = lambda record: {f: sha.get(f) for f in record}
    if key == "labels":
        return {"files": files(wanted["labels"]["files"])}
    if key == "text":
        vocab = attrs.get("vocabulary", {})
        old = {"files": files(wanted["text"]["files"])}
        if "vocabulary" in wanted["text"]:
            old["vocabulary"] = {"max_size": vocab.get("max_size"), "min_df": vocab.get("min_df"),
                                 "tokenizer": vocab.get("tokenizer")}
        return old
    if key == "split":
        split = attrs.get("split", {})
        return {"labels": {"files": files(wanted["labels"]["files"])}, "protocol": split.get("protocol"),
                "seed": split.get("seed")}
    if key.startswith("image/"):
        record = wanted[key]
        encoder = attrs.get("encoders", {}).get(name.split("/", 1)[1], {})
        return {"images": files(record["images"]), "encoder": _encoder_identity(encoder),
                "decode": "array (uint8)" if record["decode"] == "array (uint8)" else None}
    return None


def _stale(path: Path, n: int, dataset: str, wanted: dict[str, dict]) -> list[str]:
    """Why complete arrays of an existing cache were made from other inputs (empty: none were)."""
    if not (path / "zarr.json").is_file():
        return []
    try:
        cache = Cache.create(path, dataset, n)
    except CacheError as exc:  # another format, dataset or size
        return [str(exc).split(": ", 1)[1].split(";")[0]]
    return _review(cache, wanted)[1]


def _only_protocol_changed(old: dict | None, new: dict) -> bool:
    """The split was drawn from the same labels under another protocol or seed (``--resplit``)."""
    return old is not None and old.get("labels") == new["labels"]


def _staging_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.rebuild")


def _staging(final: Path, n: int, dataset: str, wanted: dict[str, dict]) -> Path:
    """A folder beside the cache to rebuild in: arrays still valid are copied over from the cache,
    what an interrupted rebuild left is resumed. The cache itself is not touched."""
    staging = _staging_path(final)
    if not (final / "zarr.json").is_file():
        return staging
    if not (staging / "zarr.json").is_file():
        shutil.rmtree(staging, ignore_errors=True)
        try:
            old = Cache.open(final, mode="a")
        except CacheError:  # another format: nothing in it can be reused
            return staging
        new = Cache.create(staging, dataset, n)
        attrs = {k: v for k, v in old.attrs.items() if k not in ("created", "updated", "format_version", "cfrh_version")}
        keep = _review(old, wanted)[0]
        for name in keep:
            parts = name.split("/")
            for depth in range(1, len(parts)):  # the groups above the array (zarr v3 needs their metadata)
                group = "/".join(parts[:depth])
                (staging / group).mkdir(parents=True, exist_ok=True)
                if not (staging / group / "zarr.json").exists():
                    shutil.copy2(old.path / group / "zarr.json", staging / group / "zarr.json")
            shutil.copytree(old.path / name, staging / name, dirs_exist_ok=True)
        tags = {name.split("/", 1)[1] for name in keep if name.startswith("image/")}
        attrs["encoders"] = {t: e for t, e in attrs.get("encoders", {}).items() if t in tags}
        new.update_attrs(**attrs)
    return staging


def _swap(staging: Path, final: Path) -> None:
    """Put a complete rebuild in the cache's place: two renames, the old cache deleted last."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def _write_tables(cache: Cache, source: Source, opts: FeatureOptions, wanted: dict[str, dict]) -> list[str]:
    """Labels, texts, split: small, written whole, each skipped while complete and made from the
    same inputs (``_stale`` refused the others before, outside a rebuild)."""
    written = []
    if not _fresh(cache, "labels", wanted["labels"]):
        cache.write("labels", source.labels, {"label_names": source.label_names or [], "made_from": wanted["labels"]})
        written.append("labels")
    text = cache.text_array()
    if not (text and _fresh(cache, text, wanted["text"])):
        written.append("text")
        if source.bow is not None:
            cache.write_text(source.bow, source.text_kind, {"source": "shipped with the dataset",
                                                            "vocabulary": source.vocabulary or [],
                                                            "made_from": wanted["text"]})
            cache.update_attrs(vocabulary={"source": "shipped", "size": int(source.bow.shape[1]),
                                           "words": source.vocabulary or []})
        else:
            words = build_vocabulary(source.texts, opts.vocab_size, opts.min_df)
            bow = bag_of_words(source.texts, words)
            empty = np.flatnonzero(np.diff(bow.indptr) == 0)
            if empty.size:
                log.warning("%d texts have no vocabulary word (rows %s…)", empty.size, empty[:5].tolist())
            cache.write_text(bow, "bow", {"source": "built here", "vocabulary": words, "made_from": wanted["text"]})
            cache.update_attrs(vocabulary={"source": "built", "size": len(words), "min_df": opts.min_df,
                                           "max_size": opts.vocab_size, "tokenizer": TOKENIZER, "words": words,
                                           "rows_without_words": int(empty.size)})
    raw = {"text/raw": source.texts, "meta/image_path": source.image_paths}  # what search shows of a hit
    for name, strings in raw.items():
        if strings is not None and not _fresh(cache, f"{name}/offsets", wanted["raw"]):
            cache.write_strings(name, strings, {"made_from": wanted["raw"]})
            written.append(name)
    stored = cache.attrs.get("split")
    if stored and all(cache.has(f"split/{k}") for k in ("query", "database", "train", "val")):
        record = cache.array("split/query").attrs.get("made_from")
        if record == wanted["split"]:
            return written
        if (stored["protocol"], stored["seed"]) != (opts.protocol, opts.seed) and not opts.resplit and \
                _only_protocol_changed(record, wanted["split"]):
            raise CacheError(f"{cache.path}: holds split {stored['protocol']}/seed {stored['seed']}, you asked for "
                             f"{opts.protocol}/seed {opts.seed}; pass --resplit to replace it (runs and checkpoints "
                             "made on the old split are then retrained, never reused) or use another --cache-dir")
    split = make_split(source.labels, source.dataset, opts.protocol, opts.seed, source.fixed_split, source.reference_n)
    for key in ("query", "database", "train", "val"):
        cache.write(f"split/{key}", getattr(split, key).astype(np.int64), {"made_from": wanted["split"]})
    cache.update_attrs(split=split.describe())
    written.append("split")
    return written


def _write_text_features(cache: Cache, source: Source, encoder: Encoder, opts: FeatureOptions,
                         wanted: dict[str, dict], max_chunks: int | None) -> list[str]:
    """``text/<tag>``: the encoder's text tower on the raw texts (UCMFH/DCHMT-style text input)."""
    if source.texts is None:
        raise ConfigError(f"--text-encoder: {source.dataset} has no raw texts here (it ships text vectors); the "
                          "option is for manifests, raw COCO captions and the demo data")
    if getattr(encoder, "tokenizer", None) is None:
        raise ConfigError(f"--text-encoder: --model {opts.model} has no text tower; use an open_clip model")
    name = f"text/{encoder.tag}"
    dim = int(encoder.encode_texts(source.texts[:1]).shape[1])
    target = _feature_array(cache, name, (source.n, dim), wanted[name], opts.chunk_rows)
    stats = encode_texts(target, source.texts, encoder, opts.batch_size, opts.progress, source.dataset, max_chunks)
    if target is None or target.pending():
        return []
    target.finish({"encoder": encoder.attrs, "kind": "dense"})
    cache.update_attrs(text_encoders={**cache.attrs.get("text_encoders", {}),
                                      encoder.tag: {**encoder.attrs, "encode_stats": stats.as_dict()}})
    return [name]


def _fresh(cache: Cache, name: str, record: dict) -> bool:
    """Complete, and made from exactly these inputs."""
    return cache.has(name) and cache.array(name).attrs.get("made_from") == record


def _feature_array(cache: Cache, name: str, shape: tuple[int, int], record: dict, chunk_rows: int):
    """None when the features are complete from these inputs; else the array to fill, resumed
    where an interrupted run from the same inputs left it, begun anew otherwise."""
    same = name in cache.group and cache.group[name].attrs.get("made_from") == record
    if same and cache.has(name):
        return None
    return cache.chunked(name, shape, np.float16, {"made_from": record}, chunk_rows, resume=same)


def _previous_files(path: Path) -> list[dict]:
    try:
        return Cache.open(path).attrs.get("source_files", []) if (path / "zarr.json").is_file() else []
    except CacheError:
        return []


def _source_files(source: Source, previous: list[dict]) -> list[dict]:
    """Name, size and sha256 of each source file; a checksum is reused while size and mtime agree.
    Image files (manifest, raw COCO, WIKI) get one entry: their count, total size and one sha256
    over their contents in row order (re-read only when the listing of paths, sizes and times changed)."""
    known = {(p.get("path"), p.get("size"), p.get("mtime")): p["sha256"] for p in previous if "sha256" in p}
    out = []
    for f in source.files:
        stat = f.stat()
        key = (str(f.resolve()), stat.st_size, stat.st_mtime)
        sha = known.get(key) or sha256_file(f)
        out.append({"name": f.name, "path": key[0], "size": stat.st_size, "mtime": stat.st_mtime, "sha256": sha})
    if source.images.kind == "file":
        listing = hashlib.sha256()
        stats = [p.stat() for p in source.images.paths]
        for p, st in zip(source.images.paths, stats):
            listing.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        entry = {"name": "<image files>", "path": "<image files>", "count": len(stats),
                 "size": int(sum(st.st_size for st in stats)), "mtime": listing.hexdigest()}
        sha = known.get((entry["path"], entry["size"], entry["mtime"])) or image_files_digest(source.images.paths)
        out.append({**entry, "sha256": sha})
    return out


def image_files_digest(paths: list[Path]) -> str:
    """One sha256 over image files' names and contents, in row order."""
    content = hashlib.sha256()
    for p in paths:
        content.update(f"{Path(p).name}\0".encode())
        content.update(bytes.fromhex(sha256_file(p)))
    return content.hexdigest()


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

