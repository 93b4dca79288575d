"""Web-scale image–text collections as img2dataset writes them (LAION, CC3M/CC12M, COYO, DataComp):
WebDataset tar shards (``000000.tar`` holding ``KEY.jpg``, ``KEY.txt``, ``KEY.json``) or Parquet
files with the image bytes and the caption.

    cfrh-cache features webdataset --root 'shards/{000000..000099}.tar' --name cc3m
    cfrh-cache features parquet --root shards/ --name laion-sample --label-field tags

A first pass reads what is small (captions, the JSON records, where each image lies: a tar
member's offset and size, a Parquet row's place), so texts, labels and the split are made
before any image is decoded; images are then read row range by row range, straight from their
offsets, never a shard whole: so stage 1 resumes chunk by chunk and splits the chunks across
torchrun ranks as for any dataset. Every shard is a source file, checksummed. Labels are
optional: ``--label-field FIELD`` names the JSON field (a name or a list of names). A broken or
truncated shard, a sample without an image or a caption, an image that does not decode: the
shard and key are named, and ``--on-error stop`` (the default) stops there, ``skip`` leaves the
sample out and counts it in the cache's notes. The standard library's ``tarfile`` and pyarrow
do the reading: the ``webdataset`` package streams shards in order, which cannot seek to a
row range (see the docs).
"""

from __future__ import annotations

import io
import json
import logging
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cfrh.errors import ConfigError, DataError
from cfrh.images import to_rgb
from cfrh_cache.readers.base import ImageSource, Source, no_layout

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
TEXT_EXTENSIONS = (".txt", ".caption")
ON_ERROR = ("stop", "skip")
log = logging.getLogger(__name__)


def expand(pattern: str) -> list[str]:
    """WebDataset's brace notation: ``{000000..000099}`` (zero-padded ranges) and ``{a,b}``."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if not match:
        return [pattern]
    head, tail, inner = pattern[:match.start()], pattern[match.end():], match.group(1)
    if ".." in inner:
        lo, hi = inner.split("..", 1)
        if not (lo.isdigit() and hi.isdigit()):
            raise ConfigError(f"--root {pattern}: a range is {{000000..000099}}, got {{{inner}}}")
        items = [str(i).zfill(len(lo)) for i in range(int(lo), int(hi) + 1)]
    else:
        items = inner.split(",")
    return [p for item in items for p in expand(head + item + tail)]


def shard_files(root: Path, suffix: str) -> list[Path]:
    """The shards ``--root`` names: a pattern with braces or ``*``, one file, or a folder of them."""
    text = str(root)
    if "{" in text or "*" in text:
        names = [Path(p) for item in expand(text) for p in (sorted(Path(item).parent.glob(Path(item).name))
                                                            if "*" in item else [Path(item)])]
        missing = [p for p in names if not p.is_file()]
        if missing:
            raise DataError(f"--root {text}: {len(missing)} of its {len(names)} shards do not exist (e.g. {missing[0]})")
        files = names
    elif root.is_dir():
        files = sorted(root.glob(f"*{suffix}"))
    else:
        files = [root] if root.is_file() else []
    if not files:
        raise DataError(f"--root {root}: no {suffix} shards found")
    return files


@dataclass(frozen=True)
class Place:
    """Where one sample's image bytes lie: a tar member (offset, size) or a Parquet row."""

    shard: str
    key: str
    offset: int  # tar: the member's data offset; parquet: the row's index in the file
    size: int  # tar: bytes; parquet: the row group


class ShardImages(ImageSource):
    """Encoded images inside shards, read by their places and decoded with Pillow."""

    kind = "shards"

    def __init__(self, places: list[Place], column: str | None = None):
        self.places, self.column = places, column

    def __len__(self) -> int:
        return len(self.places)

    def place(self) -> dict:
        return {"kind": "shards", "format": "parquet" if self.column else "tar"}

    def describe(self) -> str:
        return f"{len(self.places)} images in {len({p.shard for p in self.places})} shards"

    def read(self, start: int, stop: int) -> list[Image.Image]:
        return [decode(data, place) for data, place in zip(self.raw(start, stop), self.places[start:stop])]

    def raw(self, start: int, stop: int) -> list[bytes]:
        """The encoded bytes of rows start..stop, reading only those bytes."""
        if self.column:
            return parquet_images(self.places[start:stop], self.column)
        out = []
        handle, name = None, None
        for place in self.places[start:stop]:
            if place.shard != name:
                if handle:
                    handle.close()
                handle, name = open(place.shard, "rb"), place.shard
            handle.seek(place.offset)
            out.append(handle.read(place.size))
        if handle:
            handle.close()
        return out


def decode(data: bytes, place: Place) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return to_rgb(im)
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{place.shard}: sample {place.key!r}: the image does not decode ({exc})") from None


def parquet_images(places: list[Place], column: str) -> list[bytes]:
    """The image bytes of Parquet rows, one row group read at a time (never a file whole)."""
    import pyarrow.parquet as pq
    out, files, held = [], {}, (None, None, None)
    for place in places:
        if place.shard not in files:
            files[place.shard] = pq.ParquetFile(place.shard)
        if held[:2] != (place.shard, place.size):
            meta = files[place.shard].metadata
            first = sum(meta.row_group(g).num_rows for g in range(place.size))
            held = (place.shard, place.size, (first, files[place.shard].read_row_group(place.size, columns=[column])))
        first, group = held[2]
        out.append(group.column(column)[place.offset - first].as_py())
    return out


def read_webdataset(root: Path, image_layout: str | None = None, label_field: str | None = None,
                    on_error: str = "stop") -> Source:
    """WebDataset tar shards: one sample per key (its image, caption and JSON record)."""
    no_layout(image_layout, "shards of encoded images")
    shards, samples, skipped = shard_files(root, ".tar"), [], []
    for shard in shards:
        members: dict[str, dict] = {}
        try:
            with tarfile.open(shard, "r:") as tar:  # headers only: data is skipped, not read
                for info in tar:
                    if info.isfile():
                        key, ext = _split_name(info.name)
                        members.setdefault(key, {})[ext] = info
                texts = {k: tar.extractfile(m[e]).read().decode("utf-8", "replace")
                         for k, m in members.items() for e in TEXT_EXTENSIONS if e in m}
                records = {k: tar.extractfile(m[".json"]).read() for k, m in members.items() if ".json" in m}
        except (tarfile.TarError, OSError, EOFError) as exc:
            _problem(on_error, skipped, f"{shard}: a broken or truncated shard ({exc})")
            continue
        for key, parts in members.items():
            image = next((parts[e] for e in IMAGE_EXTENSIONS if e in parts), None)
            place = Place(str(shard.resolve()), key, image.offset_data, image.size) if image else None
            samples.append(_sample(shard, key, place, texts.get(key), records.get(key), label_field, on_error, skipped))
    return _source("webdataset", [s for s in samples if s], shards, label_field, on_error, skipped)


def read_parquet(root: Path, image_layout: str | None = None, label_field: str | None = None,
                 on_error: str = "stop") -> Source:
    """img2dataset's Parquet output: the image bytes in ``jpg`` (or ``image``/``png``/``webp``), the
    caption in ``caption`` (or ``txt``/``text``), the sample's key in ``key``, labels in a column
    or in the ``json`` record."""
    no_layout(image_layout, "shards of encoded images")
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("reading Parquet shards needs pyarrow (pip install 'cfrh[parquet]')") from None
    shards, samples, skipped, column = shard_files(root, ".parquet"), [], [], None
    for shard in shards:
        try:
            meta = pq.ParquetFile(shard)
            names = meta.schema_arrow.names
            column = next((c for c in ("jpg", "image", "png", "webp") if c in names), None)
            caption = next((c for c in ("caption", "txt", "text") if c in names), None)
            if column is None or caption is None:
                raise DataError(f"{shard}: expected an image column (jpg, image, png or webp) and a caption column "
                                f"(caption, txt or text); it has {', '.join(names)}")
            small = [c for c in ("key", caption, "json", label_field) if c and c in names]
            table = meta.read(columns=small)  # never the image column
        except DataError:
            raise
        except Exception as exc:  # pyarrow's errors for a truncated or foreign file
            _problem(on_error, skipped, f"{shard}: a broken or truncated shard ({exc})")
            continue
        group_of = np.repeat(np.arange(meta.num_row_groups), [meta.metadata.row_group(g).num_rows
                                                              for g in range(meta.num_row_groups)])
        values = table.to_pydict()
        records = values.get("json", [None] * table.num_rows)
        for i in range(table.num_rows):
            key = str(values["key"][i]) if "key" in values else f"row{i}"
            record = records[i]
            if label_field and label_field in values:
                record = json.dumps({label_field: values[label_field][i]})
            samples.append(_sample(shard, key, Place(str(shard.resolve()), key, i, int(group_of[i])),
                                   values[caption][i], record, label_field, on_error, skipped))
    return _source("parquet", [s for s in samples if s], shards, label_field, on_error, skipped, column)


def _split_name(name: str) -> tuple[str, str]:
    base = Path(name).name
    stem, dot, ext = base.partition(".")
    return str(Path(name).parent / stem), "." + ext.lower() if dot else ""


def _problem(on_error: str, skipped: list, message: str) -> None:
    if on_error == "stop":
        raise DataError(f"{message}; --on-error skip leaves such samples out")
    skipped.append(message)
    log.warning("skipped: %s", message)


def _sample(shard: Path, key: str, place: Place | None, text, record, label_field: str | None, on_error: str,
            skipped: list) -> dict | None:
    """One sample's parts, checked: an image, a caption, decodable bytes; labels from the record."""
    where = f"{shard}: sample {key!r}"
    if place is None:
        return _problem(on_error, skipped, f"{where} has no image ({', '.join(IMAGE_EXTENSIONS)})")
    if not text or not str(text).strip():
        return _problem(on_error, skipped, f"{where} has no caption")
    labels: list[str] = []
    if label_field:
        try:
            value = json.loads(record)[label_field] if record else None
        except (ValueError, TypeError, KeyError):
            value = None
        if value is None:
            return _problem(on_error, skipped, f"{where}: its JSON has no field {label_field!r}")
        labels = [str(v) for v in (value if isinstance(value, list) else [value])]
    return {"place": place, "text": str(text), "labels": labels}


def _source(reader: str, samples: list[dict], shards: list[Path], label_field, on_error, skipped,
            column: str | None = None) -> Source:
    if not samples:
        raise DataError(f"{shards[0].parent}: no usable sample in {len(shards)} shards")
    images = ShardImages([s["place"] for s in samples], column)
    bad = _undecodable(images, on_error, skipped)
    if bad:
        samples = [s for i, s in enumerate(samples) if i not in bad]
        images = ShardImages([s["place"] for s in samples], column)
    names = sorted({n for s in samples for n in s["labels"]})
    column = {n: j for j, n in enumerate(names)}
    labels = np.zeros((len(samples), len(names)), np.uint8)
    for i, s in enumerate(samples):
        labels[i, [column[n] for n in s["labels"]]] = 1
    notes = [f"{len(samples)} samples from {len(shards)} {reader} shards"
             + (f", labels from the JSON field {label_field!r} ({len(names)} classes)" if label_field else
                ", no labels (no evaluation)")]
    if skipped:
        notes.append(f"skipped {len(skipped)} samples or shards (--on-error skip), e.g. {skipped[0]}")
    source = Source(reader, images, labels, list(shards), texts=[s["text"] for s in samples], label_names=names,
                    image_paths=[f"{s['place'].shard}::{s['place'].key}" for s in samples], notes=notes,
                    reading={"label_field": label_field, "on_error": on_error, "skipped": len(skipped)})
    source.check()
    return source


def _undecodable(images: ShardImages, on_error: str, skipped: list, block: int = 256) -> set[int]:
    """Rows whose bytes Pillow cannot read (checked without decoding the pixels), before any split."""
    bad = set()
    for start in range(0, len(images), block):
        for i, data in enumerate(images.raw(start, min(start + block, len(images))), start):
            try:
                with Image.open(io.BytesIO(data)) as im:
                    im.verify()
            except Exception as exc:  # Pillow raises many kinds for a broken file
                place = images.places[i]
                _problem(on_error, skipped, f"{place.shard}: sample {place.key!r}: the image does not decode ({exc})")
                bad.add(i)
    return bad
