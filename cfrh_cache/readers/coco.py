"""MS-COCO in either form users have.

1. The DAEH/CCAH files: ``COCO.mat`` (HDF5: ``IAll`` images, ``LAll`` labels,
   ``param/indexQuery`` and ``param/indexDatabase``, 1-based) plus ``COCO_BoW.npy`` (N×2000).
2. Raw COCO 2014: ``train2014/``, ``val2014/`` images and ``annotations/captions_*2014.json``,
   ``annotations/instances_*2014.json``. Each image is one pair: its captions joined into one text,
   its instance categories as multi-hot labels; images without any category are dropped (as the
   benchmark files do). There is no fixed split, so the protocol draws one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cfrh.errors import DataError
from cfrh_cache.matfile import MatFile
from cfrh_cache.readers.base import (
    ArrayImages,
    FileImages,
    Source,
    as_labels,
    no_layout,
    shipped_text,
)

N_MAT = 87081


def read(root: Path, image_layout: str | None = None) -> Source:
    root = Path(root)
    if (root / "COCO.mat").is_file():
        return read_mat(root, image_layout)
    if (root / "annotations").is_dir():
        no_layout(image_layout, "raw COCO's image files")
        return read_raw(root)
    raise DataError(f"{root}: expected COCO.mat + COCO_BoW.npy, or raw COCO 2014 (annotations/, train2014/, val2014/)")


def read_mat(root: Path, image_layout: str | None = None) -> Source:
    mpath, bpath = root / "COCO.mat", root / "COCO_BoW.npy"
    if not bpath.is_file():
        raise DataError(f"{bpath}: file not found (the 2000-d BoW texts that go with COCO.mat)")
    try:
        bow = np.load(bpath, mmap_mode="r")
    except ValueError as exc:
        raise DataError(f"{bpath}: not a NumPy .npy array ({exc})") from exc
    if bow.ndim != 2:
        raise DataError(f"{bpath}: shape {bow.shape}, expected N×V (one BoW row per sample)")
    n = bow.shape[0]
    with MatFile(mpath) as mat:
        lvar = mat.var("LAll", expect="the labels, N×C")
        lvar = lvar.expect_shape((n, None), f"(one row per sample, as {bpath.name} has {n})")
        labels = as_labels(lvar.read(), mpath, "LAll")
        split = {}
        for name, key in (("query", "param/indexQuery"), ("database", "param/indexDatabase")):
            index = mat.var(key, expect="1-based row numbers").read().astype(np.int64).ravel() - 1
            if index.size == 0 or index.min() < 0 or index.max() >= n:
                raise DataError(f"{mpath}: '{key}' must hold 1-based row numbers in 1..{n}; "
                                f"found {index.min() + 1}..{index.max() + 1}")
            split[name] = index
    if np.intersect1d(split["query"], split["database"]).size:
        raise DataError(f"{mpath}: param/indexQuery and param/indexDatabase overlap")
    images = ArrayImages(mpath, "IAll", n, image_layout)
    notes = [f"images from {images.describe()}", f"texts from {bpath.name}", "split from COCO.mat param (1-based)"]
    if n != N_MAT:
        notes.append(f"{n} pairs; the common COCO.mat has {N_MAT}")
    source = Source("coco", images, labels, [mpath, bpath], bow=shipped_text(np.asarray(bow), bpath, "(the array)"),
                    roles={"images": [mpath], "texts": [bpath], "labels": [mpath]},
                    fixed_split=split, notes=notes)
    source.check()
    return source


def read_raw(root: Path) -> Source:
    ann = root / "annotations"
    paths, texts, cats = [], [], []
    category_ids: set[int] = set()
    for part in ("train2014", "val2014"):
        cpath, ipath = ann / f"captions_{part}.json", ann / f"instances_{part}.json"
        if not cpath.is_file() and not ipath.is_file():
            continue
        captions, instances = _load_json(cpath), _load_json(ipath)
        by_image: dict[int, list[str]] = {}
        for a in _field(captions, cpath, "annotations"):
            by_image.setdefault(a["image_id"], []).append(a["caption"].strip())
        labels: dict[int, set[int]] = {}
        for a in _field(instances, ipath, "annotations"):
            labels.setdefault(a["image_id"], set()).add(a["category_id"])
        category_ids.update(c["id"] for c in _field(instances, ipath, "categories"))
        for image in sorted(_field(captions, cpath, "images"), key=lambda im: im["id"]):
            if image["id"] in labels and image["id"] in by_image:
                paths.append(root / part / image["file_name"])
                texts.append(" ".join(by_image[image["id"]]))
                cats.append(labels[image["id"]])
    if not paths:
        raise DataError(f"{ann}: no captions_*2014.json / instances_*2014.json pairs with labelled images")
    order = sorted(category_ids)
    column = {c: j for j, c in enumerate(order)}
    label_matrix = np.zeros((len(paths), len(order)), np.uint8)
    for i, cs in enumerate(cats):
        label_matrix[i, [column[c] for c in cs]] = 1
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{missing[0]}: image file not found ({len(missing)} missing in all)")
    source = Source("coco", FileImages(paths), label_matrix, sorted(ann.glob("*_*2014.json")), texts=texts,
                    label_names=[str(c) for c in order], image_paths=[str(p.resolve()) for p in paths],
                    notes=["raw COCO 2014: captions joined per image, instance categories as labels"])
    source.check()
    return source


def _load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (raw COCO needs both captions_ and instances_ files)") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc


def _field(doc: dict, path: Path, key: str) -> list:
    if key not in doc:
        raise DataError(f"{path}: no '{key}' key; expected a COCO annotation file")
    return doc[key]
