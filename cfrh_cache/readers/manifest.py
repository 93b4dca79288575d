"""Users' own collections: a CSV or JSONL manifest with ``image``, ``text`` and optional ``labels``.

``image`` is a path (relative to the manifest's folder or absolute); ``text`` a caption or tags;
``labels`` a list (JSONL) or a string of names separated by ``;`` or ``|`` (CSV; a comma is part
of a name, and a warning says so, since ``a,b`` is usually meant as two labels). The vocabulary
of texts and of labels is built here; label columns are sorted by name. Files are UTF-8 (a
byte-order mark, as Excel writes, is fine); fields may be of any length.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from pathlib import Path

import numpy as np

from cfrh.errors import DataError
from cfrh_cache.readers.base import FileImages, Source, no_layout

REQUIRED = ("image", "text")
FIELD_LIMIT = 1 << 28  # csv's default 128 KiB stops long captions and tag lists
log = logging.getLogger(__name__)


def read(root: Path, image_layout: str | None = None) -> Source:
    """``root`` is the manifest file, or a folder holding ``manifest.csv`` or ``manifest.jsonl``."""
    no_layout(image_layout, "a manifest's image files")
    path = find_manifest(Path(root))
    rows = list(_rows(path))
    if not rows:
        raise DataError(f"{path}: the manifest has no rows")
    has_labels = any(r["labels"] is not None for _, r in rows)
    seen: dict[tuple[str, str], int] = {}
    paths, texts, label_sets = [], [], []
    for line, row in rows:
        image, text = row["image"], row["text"]
        if not image:
            raise DataError(f"{path}:{line}: empty 'image' path")
        if not text.strip():
            raise DataError(f"{path}:{line}: empty 'text' (image {image}); every pair needs a caption or tags")
        if (image, text) in seen:
            raise DataError(f"{path}:{line}: duplicate of line {seen[(image, text)]} (same image and text)")
        seen[(image, text)] = line
        full = Path(image) if Path(image).is_absolute() else path.parent / image
        if not full.is_file():
            problem = "is not a readable file" if full.exists() else "not found"
            raise DataError(f"{path}:{line}: image file {problem}: {full}")
        if has_labels and not row["labels"]:
            raise DataError(f"{path}:{line}: no labels, while other rows have them; give every row a label")
        paths.append(full)
        texts.append(text)
        label_sets.append(row["labels"] or [])
    names = sorted({name for labels in label_sets for name in labels})
    notes = [f"{len(paths)} pairs from {path.name}" + ("" if has_labels else ", no labels (no evaluation)")]
    with_comma = [name for name in names if "," in name]
    if with_comma and path.suffix.lower() == ".csv":
        notes.append(f"{len(with_comma)} label names contain ',' (e.g. {with_comma[0]!r}): CSV labels are separated "
                     "by ';' or '|', so each of these is one label")
        log.warning("%s: %s", path, notes[-1])
    column = {name: j for j, name in enumerate(names)}
    labels = np.zeros((len(paths), len(names)), np.uint8)
    for i, ls in enumerate(label_sets):
        labels[i, [column[name] for name in ls]] = 1
    source = Source("manifest", FileImages(paths), labels, [path], texts=texts, label_names=names,
                    image_paths=[str(p.resolve()) for p in paths],
                    notes=notes)
    source.check()
    return source


def find_manifest(root: Path) -> Path:
    if root.is_file():
        return root
    for name in ("manifest.csv", "manifest.jsonl"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root}: expected a manifest file, or a folder with manifest.csv or manifest.jsonl")


def _text(path: Path) -> str:
    """The file as text: UTF-8 with or without a byte-order mark; anything else names the line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start}); re-save the "
                        "manifest as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


def _rows(path: Path):
    """Yield (line number, {image, text, labels}) from CSV or JSONL."""
    text = _text(path)
    if path.suffix.lower() in (".jsonl", ".json"):
        for line, raw in enumerate(text.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                item = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line}: not valid JSON ({exc})") from exc
            yield line, _normalise(item, path, line)
        return
    previous = csv.field_size_limit(FIELD_LIMIT)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; expected header image,text[,labels], "
                            f"found {reader.fieldnames}")
        try:
            for item in reader:
                yield reader.line_num, _normalise(item, path, reader.line_num)
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from exc
    finally:
        csv.field_size_limit(previous)


def _normalise(item: dict, path: Path, line: int) -> dict:
    if not isinstance(item, dict):
        raise DataError(f"{path}:{line}: expected an object with image, text[, labels]")
    missing = [c for c in REQUIRED if c not in item]
    if missing:
        raise DataError(f"{path}:{line}: missing key(s) {missing}; expected image, text[, labels]")
    labels = item.get("labels")
    if isinstance(labels, str):
        labels = [s.strip() for s in re.split(r"[;|]", labels) if s.strip()]
    elif isinstance(labels, list):
        labels = [str(s).strip() for s in labels if str(s).strip()]
    elif labels is not None:
        raise DataError(f"{path}:{line}: 'labels' must be a list or a ';'-separated string, got {labels!r}")
    return {"image": str(item["image"]).strip(), "text": str(item["text"] or ""), "labels": labels or None}
