"""WIKI in Rasiwasia's layout: 2,866 pairs of 10 single-label categories, 10-d LDA text topics.

``trainset_txt_img_cat.list`` / ``testset_txt_img_cat.list`` lines read
``<text id> <image id> <category 1..10>``; images are ``images/<category>/<image id>.jpg``;
``raw_features.mat`` holds the text topics ``T_tr`` (2,173×10) and ``T_te`` (693×10).
Rows are the training list, then the test list; the split is fixed: query = test, database = train.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cfrh.errors import DataError
from cfrh_cache.matfile import MatFile
from cfrh_cache.readers.base import FileImages, Source, _compact_bow, no_layout

N_TRAIN, N_TEST, CLASSES = 2173, 693, 10


def read(root: Path, image_layout: str | None = None) -> Source:
    root = Path(root)
    no_layout(image_layout, "WIKI's image files")
    train = _read_list(root / "trainset_txt_img_cat.list")
    test = _read_list(root / "testset_txt_img_cat.list")
    by_name = {p.stem: p for p in (root / "images").glob("*/*.jpg")}
    rows = train + test
    paths = []
    for list_name, (image_id, _) in zip(["trainset"] * len(train) + ["testset"] * len(test), rows):
        if image_id not in by_name:
            raise DataError(f"{root / 'images'}: no <category>/{image_id}.jpg for an entry of {list_name}_txt_img_cat.list")
        paths.append(by_name[image_id])
    mpath = root / "raw_features.mat"
    with MatFile(mpath) as mat:
        t_tr = mat.var("T_tr", expect="training text topics, 2173×10")
        t_tr = t_tr.expect_shape((len(train), None), "(one row per line of trainset_txt_img_cat.list)")
        t_te = mat.var("T_te", expect="test text topics, 693×10")
        t_te = t_te.expect_shape((len(test), t_tr.shape[1]), "(one row per line of testset_txt_img_cat.list)")
        bow = _compact_bow(np.concatenate([t_tr.read(), t_te.read()]).astype(np.float32), mpath, "T_tr/T_te")
    cats = np.array([c for _, c in rows])
    labels = np.zeros((len(rows), CLASSES), np.uint8)
    labels[np.arange(len(rows)), cats - 1] = 1
    notes = ["texts are LDA topic vectors (T_tr/T_te), stored as they are"]
    if (len(train), len(test)) != (N_TRAIN, N_TEST):
        notes.append(f"{len(train)}+{len(test)} pairs; the benchmark has {N_TRAIN}+{N_TEST}")
    source = Source("wiki", FileImages(paths), labels, [root / "trainset_txt_img_cat.list",
                    root / "testset_txt_img_cat.list", mpath], bow=bow,
                    label_names=sorted({p.parent.name for p in paths}) if len({p.parent.name for p in paths}) == CLASSES else None,
                    fixed_split={"query": np.arange(len(train), len(rows)), "database": np.arange(len(train))},
                    image_paths=[str(p.resolve()) for p in paths], notes=notes,
                    roles={"texts": [mpath]})
    source.check()
    return source


def _read_list(path: Path) -> list[tuple[str, int]]:
    if not path.is_file():
        raise DataError(f"{path}: file not found (WIKI needs trainset_ and testset_txt_img_cat.list)")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or not parts[2].isdigit() or not 1 <= int(parts[2]) <= CLASSES:
            raise DataError(f"{path}:{number}: expected '<text id> <image id> <category 1..{CLASSES}>', got {line!r}")
        rows.append((parts[1], int(parts[2])))
    return rows
