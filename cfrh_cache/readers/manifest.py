"""Users' own collections: a CSV or JSONL manifest with ``image``, ``text`` and optional ``labels``.

``image`` is a path (relative to the manifest's folder or absolute); ``text`` a caption or tags;
``labels`` a list (JSONL) or a string of names separated by ``;`` or ``|`` (CSV). The vocabulary
of texts and of labels is built here; label columns are sorted by name.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np

from cfrh_cache.matfile import DataError
from cfrh_cache.readers.base import FileImages, Source

REQUIRED = ("image", "text")


def read(root: Path) -> Source:
    """``root`` is the manifest file, or a folder holding ``manifest.csv`` or ``manifest.jsonl``."""
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
    column = {name: j for j, name in enumerate(names)}
    labels = np.zeros((len(paths), len(names)), np.uint8)
    for i, ls in enumerate(label_sets):
        labels[i, [column[name] for name in ls]] = 1
    source = Source("manifest", FileImages(paths), labels, [path], texts=texts, label_names=names,
                    image_paths=[r["image"] for _, r in rows],
                    notes=[f"{len(paths)} pairs from {path.name}" + ("" if has_labels else ", no labels (no evaluation)")])
    source.check()
    return source


def find_manifest(root: Path) -> Path:
    if root.is_file():
        return root
    for name in ("manifest.csv", "manifest.jsonl"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root}: expected a manifest file, or a folder with manifest.csv or manifest.jsonl")


def _rows(path: Path):
    """Yield (line number, {image, text, labels}) from CSV or JSONL."""
    if path.suffix.lower() in (".jsonl", ".json"):
        with open(path, encoding="utf-8") as f:
            for line, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    item = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{line}: not valid JSON ({exc})") from exc
                yield line, _normalise(item, path, line)
        return
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; expected header image,text[,labels], "
                            f"found {reader.fieldnames}")
        for item in reader:
            yield reader.line_num, _normalise(item, path, reader.line_num)


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
