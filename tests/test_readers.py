import json

import numpy as np
import pytest
from PIL import Image

from cfrh.errors import DataError
from cfrh_cache.readers import coco, mirflickr, nuswide, read_dataset
from cfrh_cache.readers.synth import write_mat5, write_mat73


def write_trio(root, prefix, n, v, c, y_writer=write_mat5, l_writer=write_mat5, seed=0, side=8):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (side, side, 3, n), dtype=np.uint8)  # MATLAB H×W×3×N
    y = rng.integers(0, 2, (n, v)).astype(np.float64)
    labels = rng.integers(0, 2, (n, c)).astype(np.uint8)
    labels[labels.sum(1) == 0, 0] = 1
    root.mkdir(parents=True, exist_ok=True)
    write_mat73(root / f"{prefix}-iall.mat", {"IAll": images})
    y_writer(root / f"{prefix}-yall.mat", {"YAll": y})
    l_writer(root / f"{prefix}-lall.mat", {"LAll": labels})
    return images, y, labels


@pytest.mark.slow
@pytest.mark.parametrize("y_writer", [write_mat5, write_mat73])
@pytest.mark.parametrize("l_writer", [write_mat5, write_mat73])
def test_mirflickr_both_layouts(tmp_path, y_writer, l_writer):
    images, y, labels = write_trio(tmp_path, "mirflickr25k", 20015, 1386, 24, y_writer, l_writer, side=4)
    source = mirflickr.read(tmp_path)
    assert source.n == 20015 and source.bow.shape == (20015, 1386) and source.bow.dtype == np.uint8
    np.testing.assert_array_equal(source.bow, y)
    np.testing.assert_array_equal(source.labels, labels)
    # rows come back as (n, 3, H, W): MATLAB's H×W×3 per image, H first
    np.testing.assert_array_equal(source.images.read(7, 9), images[..., 7:9].transpose(3, 2, 0, 1))


@pytest.mark.slow
def test_mirflickr_wrong_vocabulary_is_named(tmp_path):
    write_trio(tmp_path, "mirflickr25k", 20015, 1000, 24, side=2)
    with pytest.raises(DataError, match=r"mirflickr25k-yall\.mat: variable 'YAll' \(v5\) has shape 20015×1000, expected 20015×1386"):
        mirflickr.read(tmp_path)


@pytest.mark.slow
def test_mirflickr_transposed_text_gets_a_hint(tmp_path):
    write_trio(tmp_path, "mirflickr25k", 20015, 1386, 24, side=2)
    y = np.zeros((1386, 20015))
    write_mat5(tmp_path / "mirflickr25k-yall.mat", {"YAll": y})
    with pytest.raises(DataError, match="looks transposed"):
        mirflickr.read(tmp_path)


@pytest.mark.parametrize("y_writer", [write_mat5, write_mat73])
def test_nuswide_both_layouts(tmp_path, monkeypatch, y_writer):
    monkeypatch.setattr(nuswide, "N", 300)  # the real 186,577 rows would not fit a unit test
    _, y, labels = write_trio(tmp_path, "nus-wide-tc10", 300, 1000, 10, y_writer)
    source = nuswide.read(tmp_path)
    assert source.dataset == "nuswide" and source.n == 300 and source.labels.shape == (300, 10)
    np.testing.assert_array_equal(source.bow, y)


def test_nuswide_checks_its_real_size(tmp_path):
    write_trio(tmp_path, "nus-wide-tc10", 300, 1000, 10)
    with pytest.raises(DataError, match="expected 186577×1000"):
        nuswide.read(tmp_path)


def test_labels_must_be_multi_hot_and_present(tmp_path, monkeypatch):
    monkeypatch.setattr(nuswide, "N", 50)
    write_trio(tmp_path, "nus-wide-tc10", 50, 1000, 10)
    labels = np.zeros((50, 10), np.uint8)
    labels[:45, 1] = 1
    write_mat5(tmp_path / "nus-wide-tc10-lall.mat", {"LAll": labels})
    with pytest.raises(DataError, match=r"5 rows have no label \(rows 45, 46, 47, 48, 49\)"):
        nuswide.read(tmp_path)


def test_images_and_texts_must_agree_in_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(nuswide, "N", 40)
    write_trio(tmp_path, "nus-wide-tc10", 40, 1000, 10)
    write_mat73(tmp_path / "nus-wide-tc10-iall.mat", {"IAll": np.zeros((4, 4, 3, 39), np.uint8)})
    with pytest.raises(DataError, match=r"iall\.mat.*no axis of length 40"):
        nuswide.read(tmp_path)


@pytest.mark.parametrize("layout", ["DJSRH", "N×3×H×W"])
def test_coco_mat(tmp_path, layout):
    n = 30
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (n, 3, 6, 5), dtype=np.uint8)
    stored = images.transpose(2, 3, 1, 0) if layout == "DJSRH" else images
    labels = (rng.random((n, 7)) < 0.3).astype(np.uint8)
    labels[:, 0] = 1
    write_mat73(tmp_path / "COCO.mat", {"IAll": stored, "LAll": labels,
                                         "param/indexQuery": np.arange(1, 6).reshape(1, -1),
                                         "param/indexDatabase": np.arange(6, n + 1).reshape(1, -1)})
    np.save(tmp_path / "COCO_BoW.npy", rng.integers(0, 3, (n, 20)).astype(np.float32))
    source = coco.read(tmp_path)
    np.testing.assert_array_equal(source.fixed_split["query"], np.arange(5))
    np.testing.assert_array_equal(source.fixed_split["database"], np.arange(5, n))
    assert source.bow.shape == (n, 20)
    np.testing.assert_array_equal(source.images.read(3, 4)[0], images[3])


def test_coco_mat_bad_index(tmp_path):
    write_mat73(tmp_path / "COCO.mat", {"IAll": np.zeros((4, 4, 3, 10), np.uint8), "LAll": np.ones((10, 3), np.uint8),
                                         "param/indexQuery": np.array([[0, 1]]), "param/indexDatabase": np.arange(2, 11)[None]})
    np.save(tmp_path / "COCO_BoW.npy", np.zeros((10, 4)))
    with pytest.raises(DataError, match=r"COCO\.mat: 'param/indexQuery' must hold 1-based row numbers"):
        coco.read(tmp_path)


def _jpeg(path, colour=(200, 10, 10), size=(20, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_coco_raw(tmp_path):
    images = [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg"} for i in (3, 1, 2)]
    for im in images:
        _jpeg(tmp_path / "train2014" / im["file_name"])
    captions = {"images": images, "annotations": [
        {"image_id": 1, "caption": "A dog on a beach."}, {"image_id": 1, "caption": "Dog running."},
        {"image_id": 2, "caption": "A cat."}, {"image_id": 3, "caption": "Nothing labelled here."}]}
    instances = {"categories": [{"id": 18, "name": "dog"}, {"id": 17, "name": "cat"}],
                 "annotations": [{"image_id": 1, "category_id": 18}, {"image_id": 2, "category_id": 17},
                                 {"image_id": 2, "category_id": 18}]}
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions_train2014.json").write_text(json.dumps(captions))
    (tmp_path / "annotations" / "instances_train2014.json").write_text(json.dumps(instances))
    source = coco.read(tmp_path)
    assert source.texts == ["A dog on a beach. Dog running.", "A cat."]  # image 3 has no category: dropped
    np.testing.assert_array_equal(source.labels, [[0, 1], [1, 1]])  # columns: category 17, 18
    assert source.images.read(0, 1)[0].size == (20, 16)


def _wiki(root, writer=write_mat5, n_train=6, n_test=3):
    cats = ["art", "biology", "geography", "history", "literature", "media", "music", "royalty", "sport", "warfare"]
    lines = {"train": [], "test": []}
    for split, count in (("train", n_train), ("test", n_test)):
        for i in range(count):
            c = (i * 3 + (split == "test")) % 10
            name = f"{split}img{i}"
            _jpeg(root / "images" / cats[c] / f"{name}.jpg", (c * 20, 0, 0))
            lines[split].append(f"txt{split}{i}\t{name}\t{c + 1}")
    (root / "trainset_txt_img_cat.list").write_text("\n".join(lines["train"]) + "\n")
    (root / "testset_txt_img_cat.list").write_text("\n".join(lines["test"]) + "\n")
    rng = np.random.default_rng(0)
    writer(root / "raw_features.mat", {"T_tr": rng.random((n_train, 10)), "T_te": rng.random((n_test, 10))})


@pytest.mark.parametrize("writer", [write_mat5, write_mat73])
def test_wiki(tmp_path, writer):
    _wiki(tmp_path, writer)
    source = read_dataset("wiki", tmp_path)
    assert source.n == 9 and source.bow.shape == (9, 10) and source.bow.dtype == np.float32
    assert source.text_kind == "dense"  # LDA topics
    assert (source.labels.sum(1) == 1).all() and source.labels[0, 0] == 1 and source.labels[1, 3] == 1
    np.testing.assert_array_equal(source.fixed_split["query"], [6, 7, 8])
    assert source.images.read(1, 2)[0].getpixel((0, 0))[0] == 60


def test_wiki_bad_list_line(tmp_path):
    _wiki(tmp_path)
    (tmp_path / "testset_txt_img_cat.list").write_text("a b 11\n")
    with pytest.raises(DataError, match=r"testset_txt_img_cat\.list:1: expected"):
        read_dataset("wiki", tmp_path)


def _manifest(tmp_path, rows, name="manifest.csv"):
    for r in rows:
        if not r.get("_missing"):
            _jpeg(tmp_path / r["image"])
    if name.endswith(".csv"):
        lines = ["image,text,labels"] + [f'{r["image"]},"{r["text"]}",{r.get("labels", "")}' for r in rows]
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    else:
        (tmp_path / name).write_text("\n".join(json.dumps({k: v for k, v in r.items() if not k.startswith("_")})
                                               for r in rows) + "\n")
    return tmp_path / name


def test_manifest_csv_and_jsonl_agree(tmp_path):
    rows = [{"image": "a.jpg", "text": "a red car", "labels": "car;red"}, {"image": "b.jpg", "text": "blue sky", "labels": "sky"}]
    csv_source = read_dataset("manifest", _manifest(tmp_path, rows))
    jrows = [{**r, "labels": r["labels"].split(";")} for r in rows]
    json_source = read_dataset("manifest", _manifest(tmp_path, jrows, "m.jsonl"))
    assert csv_source.label_names == json_source.label_names == ["car", "red", "sky"]
    np.testing.assert_array_equal(csv_source.labels, [[1, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(csv_source.labels, json_source.labels)
    assert csv_source.texts == json_source.texts == ["a red car", "blue sky"]


@pytest.mark.parametrize("rows,message", [
    ([{"image": "a.jpg", "text": "x y", "labels": "l"}, {"image": "a.jpg", "text": "x y", "labels": "l"}],
     r"manifest\.csv:3: duplicate of line 2"),
    ([{"image": "a.jpg", "text": "  ", "labels": "l"}], r"manifest\.csv:2: empty 'text'"),
    ([{"image": "gone.jpg", "text": "t", "labels": "l", "_missing": True}], r"manifest\.csv:2: image file not found"),
    ([{"image": "a.jpg", "text": "t", "labels": "l"}, {"image": "b.jpg", "text": "u", "labels": ""}],
     r"manifest\.csv:3: no labels"),
])
def test_manifest_errors(tmp_path, rows, message):
    with pytest.raises(DataError, match=message):
        read_dataset("manifest", _manifest(tmp_path, rows))


def test_manifest_missing_column(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,caption\nx.jpg,hi\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['image', 'text'\]"):
        read_dataset("manifest", tmp_path)


def test_corrupt_image_is_named(tmp_path):
    rows = [{"image": "a.jpg", "text": "t", "labels": "l"}]
    path = _manifest(tmp_path, rows)
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8\xff garbage")
    source = read_dataset("manifest", path)
    with pytest.raises(DataError, match=r"a\.jpg: cannot decode image of row 0"):
        source.images.read(0, 1)


def test_synth_both_layouts_same_pixels(synth_dir):
    mat = read_dataset("synth", synth_dir)
    man = read_dataset("manifest", synth_dir)
    assert mat.n == man.n == 240
    pixels = mat.images.read(10, 13)
    for k, im in enumerate(man.images.read(10, 13)):
        np.testing.assert_array_equal(np.asarray(im).transpose(2, 0, 1), pixels[k])
    # same labels, up to the manifest's alphabetical column order
    order = [man.label_names.index(name) for name in mat.label_names]
    np.testing.assert_array_equal(man.labels[:, order], mat.labels)
    assert 1 <= mat.labels.sum(1).min() and mat.labels.sum(1).max() <= 3
