"""What each cache array is made from, and the rule that follows: an array is reused only while
everything it was made from is unchanged (its source files by sha256, the options that shape
it, the encoder's weights and preprocessing). Otherwise stage 1 refuses, naming the array and
what changed, or, with ``--rebuild``, rebuilds in a staging folder that replaces the cache only
once complete. Caches of cfrh 0.2 (no record) are adopted where their own attributes tell.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from cfrh.diffs import first_difference
from cfrh.errors import CacheError
from cfrh.fsio import sha256_file
from cfrh.images import DECODE
from cfrh_cache.options import FeatureOptions
from cfrh_cache.readers import Source
from cfrh_cache.splits import holdout_default
from cfrh_cache.store import Cache

if TYPE_CHECKING:  # an annotation only: provenance needs no torch
    from cfrh.encoders import Encoder


def made_from(source: Source, files: list[dict], opts: FeatureOptions, encoder: Encoder) -> dict[str, dict]:
    """What each array of the cache is made from: the checksums of its source files and the
    options that shape it. Stored in the array's attributes; an array is reused only while equal."""
    sha = {f["path"]: f["sha256"] for f in files}
    role = lambda r: {Path(p).name: sha[str(Path(p).resolve())] for p in source.files_for(r)}
    images = {"<image files>": sha["<image files>"]} if source.images.kind == "file" else role("images")
    decode = {"file": DECODE, "shards": DECODE, "array": "array (uint8)", "features": "precomputed"}[source.images.kind]
    reading = {"reading": source.reading} if source.reading else {}  # which samples are rows: shapes every array
    images = {**images, **reading}
    labels = {"files": role("labels"), **reading}
    texts = {"files": role("texts"), **reading,
             **({} if source.bow is not None else {"vocabulary": opts.vocabulary_params()})}
    records = {}
    if opts.text_encoder:
        records[f"text/{encoder.tag}"] = {"texts": role("raw"), "encoder": encoder_identity(encoder.attrs)}
    return {**records, "labels": labels, "text": texts, "raw": {"texts": role("raw"), "images": images},
            "split": {"labels": labels, "protocol": opts.protocol, "seed": opts.seed,
                      "val_holdout": holdout_default(opts.protocol, source.dataset) if opts.val_holdout is None
                      else opts.val_holdout},
            f"image/{encoder.tag}": {"images": images, "encoder": encoder_identity(encoder.attrs),
                                     "decode": decode}}


def encoder_identity(attrs: dict) -> dict:
    keep = ("model", "pretrained", "weights_sha256", "random_init_seed", "preprocessing", "dim", "origin")
    return {k: attrs[k] for k in keep if k in attrs}


ARRAYS_OF = {"labels": ("labels",), "text": Cache.TEXT_ARRAYS,
             "split": ("split/query", "split/database", "split/train", "split/val"),
             "raw": ("text/raw/utf8", "text/raw/offsets", "meta/image_path/utf8", "meta/image_path/offsets")}


def arrays_of(key: str) -> tuple[str, ...]:
    return ARRAYS_OF.get(key, (key,))


def review(cache: Cache, wanted: dict[str, dict]) -> tuple[list[str], list[str]]:
    """The complete arrays that were made from these inputs, and why the others were not. Other
    encoders' features count as valid while made from the same images. The raw texts and image
    paths are copies of the source, rewritten whenever it changed: they never block a run."""
    valid, stale = [], []
    images = next(record["images"] for key, record in wanted.items() if key.startswith("image/"))
    for name in cache.names(complete_only=True):
        key = next((k for k in wanted if name in arrays_of(k)), None)
        if key == "raw":
            continue
        record = cache.array(name).attrs.get("made_from")
        if record is None and key is not None:  # written before cfrh 0.3: read its record off the cache
            record = legacy_record(cache, key, name, wanted)
            if record == wanted[key]:
                cache.array(name).attrs.update({"made_from": record})  # provenance only; the data is untouched
        if key is not None:
            ok = record == wanted[key] or (key == "split" and only_protocol_changed(record, wanted[key]))
            why = first_difference(record, wanted[key])
        elif name.startswith("image/") and record is not None and "imported" in record:
            continue  # features imported beside the cache's own: their own files are their provenance
        elif name.startswith("image/"):
            ok = record is not None and record.get("images") == images
            why = first_difference(None if record is None else record.get("images"), images, "images ")
        elif name.startswith("text/"):  # another text encoder's features: valid while the texts are the same
            ok = record is not None and record.get("texts") == wanted["raw"]["texts"]
            why = first_difference(None if record is None else record.get("texts"), wanted["raw"]["texts"], "texts ")
        else:
            continue
        (valid if ok else stale).append(name if ok else f"{name} was made from other inputs ({why})")
    return valid, stale


def legacy_record(cache: Cache, key: str, name: str, wanted: dict[str, dict]) -> dict | None:
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
                "seed": split.get("seed"), "val_holdout": split.get("val_holdout", False)}
    if key.startswith("image/"):
        record = wanted[key]
        encoder = attrs.get("encoders", {}).get(name.split("/", 1)[1], {})
        return {"images": files(record["images"]), "encoder": encoder_identity(encoder),
                "decode": "array (uint8)" if record["decode"] == "array (uint8)" else None}
    return None


def stale_reasons(path: Path, n: int, dataset: str, wanted: dict[str, dict]) -> list[str]:
    """Why complete arrays of an existing cache were made from other inputs (empty: none were)."""
    if not (path / "zarr.json").is_file():
        return []
    try:
        cache = Cache.create(path, dataset, n)
    except CacheError as exc:  # another format, dataset or size
        return [str(exc).split(": ", 1)[1].split(";")[0]]
    return review(cache, wanted)[1]


def only_protocol_changed(old: dict | None, new: dict) -> bool:
    """The split was drawn from the same labels under another protocol or seed (``--resplit``)."""
    return old is not None and old.get("labels") == new["labels"]


def staging_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.rebuild")


def stage_rebuild(final: Path, n: int, dataset: str, wanted: dict[str, dict]) -> Path:
    """A folder beside the cache to rebuild in: arrays still valid are copied over from the cache,
    what an interrupted rebuild left is resumed. The cache itself is not touched."""
    staging = staging_path(final)
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
        keep = review(old, wanted)[0]
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


def swap_in(staging: Path, final: Path) -> None:
    """Put a complete rebuild in the cache's place: two renames, the old cache deleted last."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def fresh(cache: Cache, name: str, record: dict) -> bool:
    """Complete, and made from exactly these inputs."""
    return cache.has(name) and cache.array(name).attrs.get("made_from") == record


def previous_files(path: Path) -> list[dict]:
    try:
        return Cache.open(path).attrs.get("source_files", []) if (path / "zarr.json").is_file() else []
    except CacheError:
        return []


def source_files(source: Source, previous: list[dict]) -> list[dict]:
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
