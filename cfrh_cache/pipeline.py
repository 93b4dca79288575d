"""Stage 1 end to end: a source (a reader's, or ``cfrh-cache import``'s) → texts, labels, split →
image (and text) features → the store.

The encoding loop lives in ``runner`` (reader → mapper → writer, each role timed), the rule of
what may be reused in ``provenance``; this module decides what to write, in which order, and
which rank writes it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cfrh.diffs import first_difference
from cfrh.encoders import Encoder, load_encoder
from cfrh.errors import CacheError, ConfigError
from cfrh.fsio import disk_errors
from cfrh.text import TOKENIZER, bag_of_words, build_vocabulary
from cfrh_cache.options import FeatureOptions
from cfrh_cache.provenance import (
    fresh,
    made_from,
    only_protocol_changed,
    previous_files,
    source_files,
    stage_rebuild,
    staging_path,
    stale_reasons,
    swap_in,
)
from cfrh_cache.readers import Source, read_dataset
from cfrh_cache.runner import EncodeStats, Precomputed, encode_images, encode_texts
from cfrh_cache.splits import make_split
from cfrh_cache.store import Cache, check_name

log = logging.getLogger(__name__)


@dataclass
class FeatureReport:
    cache: Path
    dataset: str
    n: int
    encoder_tag: str
    stats: EncodeStats
    written: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def build_features(dataset: str, root: str | Path, cache_dir: str | Path = "cache",
                   options: FeatureOptions | None = None, *, rank: int = 0, ranks: int = 1, barrier=None,
                   max_chunks: int | None = None, name: str | None = None) -> FeatureReport:
    """Write (or finish) ``cache_dir/<name>`` (the reader's name, ``dataset``, unless named). Every step skips what a previous run completed
    from the same inputs; an array made from other inputs (a changed file, other vocabulary
    options, other weights) is refused, or with ``rebuild`` made anew in a staging folder that
    replaces the cache only once it is complete (so a failed rebuild loses nothing).

    ``max_chunks`` stops after that many image chunks (to test resumption); ``barrier`` is called
    between the phases of a multi-process run so rank 0 alone writes the shared arrays.
    """
    opts = options or FeatureOptions()
    source = read_dataset(dataset, root, opts.image_layout, opts.label_field, opts.on_error)  # its own errors
    return build_source(source, name or dataset, root, cache_dir, opts, rank=rank, ranks=ranks, barrier=barrier,
                        max_chunks=max_chunks)


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
    check_name(dataset)
    with disk_errors(Path(cache_dir) / dataset):
        return _build(source, dataset, root, Path(cache_dir), opts, rank, ranks, barrier, max_chunks)


def _build(source: Source, dataset: str, root: str | Path, cache_dir: Path, opts: FeatureOptions, rank: int,
           ranks: int, barrier, max_chunks: int | None) -> FeatureReport:
    final = Path(cache_dir) / dataset
    encoder = image_mapper(source, opts)
    name = f"image/{encoder.tag}"
    files = source_files(source, previous_files(final))
    wanted = made_from(source, files, opts, encoder)
    path, written = final, []
    if rank == 0:
        stale = stale_reasons(final, source.n, dataset, wanted)
        if stale and not opts.rebuild:
            raise CacheError(f"{final}: " + "; ".join(stale) + ". Pass --rebuild to rebuild what changed (the cache "
                             "stays as it is until the rebuild is complete), or use another --cache-dir")
        if opts.rebuild:
            path = stage_rebuild(final, source.n, dataset, wanted)
        cache = Cache.create(path, dataset, source.n)
        cache.update_attrs(root=str(Path(root).resolve()), source_files=files, source_notes=source.notes,
                           images=source.images.place())
        written += _write_tables(cache, source, opts, wanted)
        if opts.text_encoder:
            written += _write_text_features(cache, source, encoder, opts, wanted, max_chunks)
        _feature_array(cache, name, (source.n, encoder.dim), wanted[name], opts.chunk_rows)
    if barrier:
        barrier()
    path = staging_path(final) if opts.rebuild else final
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
        swap_in(path, final)
    return FeatureReport(final, dataset, source.n, encoder.tag, stats, written, source.notes)


def _write_tables(cache: Cache, source: Source, opts: FeatureOptions, wanted: dict[str, dict]) -> list[str]:
    """Labels, texts, split: small, written whole, each skipped while complete and made from the
    same inputs (``stale_reasons`` refused the others before, outside a rebuild)."""
    written = []
    if not fresh(cache, "labels", wanted["labels"]):
        cache.write("labels", source.labels, {"label_names": source.label_names or [], "made_from": wanted["labels"]})
        written.append("labels")
    text = cache.text_array()
    if not (text and fresh(cache, text, wanted["text"])):
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
        if strings is not None and not fresh(cache, f"{name}/offsets", wanted["raw"]):
            cache.write_strings(name, strings, {"made_from": wanted["raw"]})
            written.append(name)
    stored = cache.attrs.get("split")
    if stored and all(cache.has(f"split/{k}") for k in ("query", "database", "train", "val")):
        record = cache.array("split/query").attrs.get("made_from")
        if record == wanted["split"]:
            return written
        if not opts.resplit and only_protocol_changed(record, wanted["split"]):
            held = lambda r: " (validation held out of training)" if r and r.get("val_holdout") else ""
            raise CacheError(f"{cache.path}: holds split {stored['protocol']}/seed {stored['seed']}{held(record)}, you "
                             f"asked for {opts.protocol}/seed {opts.seed}{held(wanted['split'])} "
                             f"({first_difference(record, wanted['split'])}); pass --resplit to "
                             "replace it (runs and checkpoints made on the old split are then retrained, never "
                             "reused) or use another --cache-dir")
    split = make_split(source.labels, source.dataset, opts.protocol, opts.seed, source.fixed_split, source.reference_n,
                       opts.val_holdout)
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


def _feature_array(cache: Cache, name: str, shape: tuple[int, int], record: dict, chunk_rows: int):
    """None when the features are complete from these inputs; else the array to fill, resumed
    where an interrupted run from the same inputs left it, begun anew otherwise."""
    same = name in cache.group and cache.group[name].attrs.get("made_from") == record
    if same and cache.has(name):
        return None
    return cache.chunked(name, shape, np.float16, {"made_from": record}, chunk_rows, resume=same)


