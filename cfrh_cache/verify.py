"""``cfrh-cache info`` and ``verify``: what a cache holds, and whether it is whole and unaltered."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cfrh.fsio import sha256_file
from cfrh_cache.provenance import image_files_digest
from cfrh_cache.store import Cache, array_sha256


def info(path: str | Path) -> dict:
    cache = Cache.open(path)
    arrays = {}
    for name in cache.names():
        array = cache.group[name]
        arrays[name] = {"shape": list(array.shape), "dtype": str(array.dtype), "chunks": list(array.chunks),
                        "complete": bool(array.attrs.get("complete", False))}
    attrs = cache.attrs
    vocab = attrs.get("vocabulary", {})
    return {"path": str(cache.path), "dataset": attrs.get("dataset"), "n": attrs.get("n"),
            "cfrh_version": attrs.get("cfrh_version"), "created": attrs.get("created"),
            "encoders": {tag: {k: v for k, v in enc.items() if k != "preprocessing"}
                         for tag, enc in attrs.get("encoders", {}).items()},
            "split": attrs.get("split"),
            "vocabulary": {**{k: v for k, v in vocab.items() if k != "words"},
                           **({"size": len(vocab["words"]), "first_words": vocab["words"][:12]} if vocab.get("words") else {})},
            "source_files": [{k: f.get(k) for k in ("name", "size", "count")} for f in attrs.get("source_files", [])],
            "arrays": arrays}


def verify(path: str | Path, sources: bool = False) -> list[str]:
    """Problems found (empty when the cache is sound): completeness, shapes, split rules, checksums."""
    cache = Cache.open(path)
    problems: list[str] = []
    n = cache.attrs.get("n")
    names = cache.names()
    for name in names:
        array = cache.group[name]
        if not array.attrs.get("complete", False):
            problems.append(f"{name}: incomplete (interrupted run; run `cfrh-cache features` again)")
            continue
        if array_sha256(array) != array.attrs.get("sha256"):
            problems.append(f"{name}: checksum mismatch: the data changed after it was written")
        rows = n + 1 if name.endswith("/offsets") else None if name.startswith(("split/", "text/bow_csr/")) or \
            name.endswith("/utf8") else n
        if rows is not None and array.shape[0] != rows:
            problems.append(f"{name}: {array.shape[0]} rows, expected {rows} (the cache has n={n})")
    for required in ("labels", "split/query", "split/database", "split/train", "split/val"):
        if required not in names:
            problems.append(f"{required}: missing")
    if cache.text_array() is None:
        problems.append("text/bow: missing")
    if not cache.encoders():
        problems.append("image/*: no complete image feature array")
    for tag in cache.encoders():
        features = cache.group[f"image/{tag}"]
        if not np.isfinite(features[...].astype(np.float32)).all():
            problems.append(f"image/{tag}: holds NaN or Inf")
    if not problems:
        split = cache.split()
        for key, rows in split.items():
            if rows.size and (rows.min() < 0 or rows.max() >= n or np.unique(rows).size != rows.size):
                problems.append(f"split/{key}: row indices out of range 0..{n - 1} or repeated")
        if np.intersect1d(split["query"], split["database"]).size:
            problems.append("split: query and database overlap")
        for key in ("train", "val"):
            if not np.isin(split[key], split["database"]).all():
                problems.append(f"split/{key}: not inside the database")
        if np.intersect1d(split["val"], split["query"]).size:
            problems.append("split/val: overlaps the queries")
    if sources:
        for f in cache.attrs.get("source_files", []):
            if "sha256" not in f:
                continue
            if f["path"] == "<image files>":
                problems += _check_image_files(cache, f)
                continue
            p = Path(f["path"])
            if not p.is_file():
                problems.append(f"source {p}: not found (cannot re-check)")
            elif p.stat().st_size != f["size"] or sha256_file(p) != f["sha256"]:
                problems.append(f"source {p}: differs from the file the cache was built from")
    return problems


def _check_image_files(cache: Cache, entry: dict) -> list[str]:
    """Re-hash the image files the cache lists (``meta/image_path``) against their stored digest."""
    if not cache.has("meta/image_path/offsets"):
        return ["source <image files>: the cache does not list its image paths (older cfrh); cannot re-check"]
    paths = [Path(p) for p in cache.read_strings("meta/image_path")]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        return [f"source {missing[0]}: not found ({len(missing)} of {len(paths)} image files missing)"]
    if image_files_digest(paths) != entry["sha256"]:
        return [f"source <image files> ({len(paths)} files): differ from the images the cache was built from"]
    return []
