"""WIKI (Rasiwasia et al.): 2,866 pairs of 10 single-label categories, 10-d LDA text topics, in
the three forms it is distributed in:

1. Rasiwasia's layout with images: ``images/<category>/<image id>.jpg``, the lists
   ``trainset_txt_img_cat.list`` / ``testset_txt_img_cat.list`` (lines ``<text id> <image id>
   <category 1..10>``) and ``raw_features.mat`` with the text topics ``T_tr`` (2,173×10) and
   ``T_te`` (693×10). The images are encoded here.
2. The same without ``images/``: the 128-d SIFT bag-of-visual-words ``I_tr``/``I_te`` shipped in
   ``raw_features.mat`` are the image features (one encoder in the cache, ``sift-bovw__shipped``).
3. The CMFH/LSSH/SCM file ``WIKI.mat`` or ``wikiData.mat`` with ``I_tr, T_tr, L_tr, I_te, T_te,
   L_te`` (labels as category numbers or one-hot rows), features only.

Rows are the training list, then the test list; the split is fixed: query = test rows, database
= train = training rows. The topics are dense text (``text_kind`` dense).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cfrh.errors import DataError
from cfrh_cache.matfile import MatFile
from cfrh_cache.readers.base import FeatureRows, FileImages, Source, as_labels, no_layout, shipped_text

N_TRAIN, N_TEST, CLASSES = 2173, 693, 10
SHIPPED = "sift-bovw__shipped"
SINGLE_FILES = ("WIKI.mat", "wikiData.mat")


def read(root: Path, image_layout: str | None = None) -> Source:
    root = Path(root)
    no_layout(image_layout, "WIKI's images")
    single = next((root / f for f in SINGLE_FILES if (root / f).is_file()), None)
    if single is not None and not (root / "trainset_txt_img_cat.list").is_file():
        return read_single_file(single)
    train = _read_list(root / "trainset_txt_img_cat.list")
    test = _read_list(root / "testset_txt_img_cat.list")
    rows = train + test
    mpath = root / "raw_features.mat"
    with MatFile(mpath) as mat:
        text = _pair(mat, "T", len(train), len(test), "text topics")
        features = _pair(mat, "I", len(train), len(test), "image features") if not (root / "images").is_dir() else None
    labels = np.zeros((len(rows), CLASSES), np.uint8)
    labels[np.arange(len(rows)), np.array([c for _, c in rows]) - 1] = 1
    lists = [root / "trainset_txt_img_cat.list", root / "testset_txt_img_cat.list"]
    notes = ["texts are LDA topic vectors (T_tr/T_te), kept as dense text"]
    if (len(train), len(test)) != (N_TRAIN, N_TEST):
        notes.append(f"{len(train)}+{len(test)} pairs; the benchmark has {N_TRAIN}+{N_TEST}")
    split = {"query": np.arange(len(train), len(rows)), "database": np.arange(len(train))}
    if features is not None:
        images = FeatureRows(features, SHIPPED, {"file": mpath.name, "key": "I_tr+I_te"})
        notes.append(f"no images/ folder: image features are the shipped I_tr/I_te ({features.shape[1]}-d SIFT BoVW)")
        source = Source("wiki", images, labels, [*lists, mpath], bow=text, text_kind="dense", fixed_split=split,
                        notes=notes, roles={"images": [mpath], "texts": [mpath], "labels": lists})
    else:
        by_name = {p.stem: p for p in (root / "images").glob("*/*.jpg")}
        paths = []
        for list_name, (image_id, _) in zip(["trainset"] * len(train) + ["testset"] * len(test), rows):
            if image_id not in by_name:
                raise DataError(f"{root / 'images'}: no <category>/{image_id}.jpg for an entry of "
                                f"{list_name}_txt_img_cat.list")
            paths.append(by_name[image_id])
        folders = {p.parent.name for p in paths}
        source = Source("wiki", FileImages(paths), labels, [*lists, mpath], bow=text, text_kind="dense",
                        label_names=sorted(folders) if len(folders) == CLASSES else None, fixed_split=split,
                        image_paths=[str(p.resolve()) for p in paths], notes=notes,
                        roles={"texts": [mpath], "labels": lists})
    source.check()
    return source


def read_single_file(path: Path) -> Source:
    """The CMFH/LSSH layout: train rows (database = train), then test rows (queries)."""
    with MatFile(path) as mat:
        n_train = mat.var("T_tr", expect="training text features").shape[0]
        n_test = mat.var("T_te", expect="test text features").shape[0]
        features = _pair(mat, "I", n_train, n_test, "image features")
        text = _pair(mat, "T", n_train, n_test, "text features")
        labels = _labels(mat, path, n_train, n_test)
    n = n_train + n_test
    source = Source("wiki", FeatureRows(features, SHIPPED, {"file": path.name, "key": "I_tr+I_te"}), labels, [path],
                    bow=text, text_kind="dense",
                    fixed_split={"query": np.arange(n_train, n), "database": np.arange(n_train)},
                    notes=[f"{path.name}: {n_train} training and {n_test} test rows (I, T, L _tr/_te); "
                           "query = test, database = train = training rows"])
    source.check()
    return source


def _pair(mat: MatFile, prefix: str, n_train: int, n_test: int, what: str) -> np.ndarray:
    """``<prefix>_tr`` above ``<prefix>_te``: one row per list line, the same width, finite."""
    tr = mat.var(f"{prefix}_tr", expect=f"training {what}, {n_train}×D").expect_shape(
        (n_train, None), "(one row per training pair)")
    te = mat.var(f"{prefix}_te", expect=f"test {what}, {n_test}×D").expect_shape(
        (n_test, tr.shape[1]), "(one row per test pair, as wide as the training rows)")
    values = np.concatenate([np.asarray(tr.read(), np.float64), np.asarray(te.read(), np.float64)])
    return shipped_text(values, mat.path, f"{prefix}_tr/{prefix}_te", "dense")


def _labels(mat: MatFile, path: Path, n_train: int, n_test: int) -> np.ndarray:
    """``L_tr``/``L_te`` as category numbers (1..C, a column) or one-hot rows → multi-hot uint8."""
    parts = []
    for key, n in (("L_tr", n_train), ("L_te", n_test)):
        values = np.asarray(mat.var(key, expect="labels").read())
        if values.ndim == 2 and values.shape[0] == n and values.shape[1] > 1:
            parts.append(values)
        else:
            numbers = values.ravel()
            if numbers.size != n or not np.all(numbers == np.round(numbers)) or numbers.min() < 1:
                raise DataError(f"{path}: variable '{key}' must hold {n} category numbers (1..C) or {n} one-hot "
                                f"rows; found shape {values.shape}")
            parts.append(numbers.astype(np.int64))
    if all(p.ndim == 1 for p in parts):
        numbers = np.concatenate(parts)
        labels = np.zeros((numbers.size, int(numbers.max())), np.uint8)
        labels[np.arange(numbers.size), numbers - 1] = 1
        return labels
    if any(p.ndim == 1 for p in parts) or parts[0].shape[1] != parts[1].shape[1]:
        raise DataError(f"{path}: L_tr and L_te must have the same form (category numbers or one-hot rows)")
    return as_labels(np.concatenate(parts), path, "L_tr/L_te")


def _read_list(path: Path) -> list[tuple[str, int]]:
    if not path.is_file():
        raise DataError(f"{path}: file not found (WIKI needs trainset_ and testset_txt_img_cat.list, or WIKI.mat)")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or not parts[2].isdigit() or not 1 <= int(parts[2]) <= CLASSES:
            raise DataError(f"{path}:{number}: expected '<text id> <image id> <category 1..{CLASSES}>', got {line!r}")
        rows.append((parts[1], int(parts[2])))
    return rows
