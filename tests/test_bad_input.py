"""Bad input beyond the per-reader tests: each case a clear error naming file, key or row and
what was expected, and nothing already written lost. (The README lists every case and its test.)"""

import json
import shutil

import h5py
import numpy as np
import pytest
import scipy.io
from conftest import features
from PIL import Image

from cfrh.errors import CacheError, ConfigError, DataError
from cfrh_cache.matfile import MatFile
from cfrh_cache.readers import read_dataset
from cfrh_cache.readers.synth import write_mat5
from cfrh_cache.store import Cache
from cfrh_cache.verify import verify
from cfrh_train.config import load
from cfrh_train.train import train


def test_matlab_v4_file_is_refused_with_how_to_resave(tmp_path):
    scipy.io.savemat(tmp_path / "old.mat", {"YAll": np.ones((3, 2))}, format="4")
    with pytest.raises(DataError, match=r"old\.mat: MATLAB v4 files are not supported; re-save with -v7 or -v7\.3"):
        MatFile(tmp_path / "old.mat")


def test_plain_hdf5_without_matlab_header_is_named(tmp_path):
    with h5py.File(tmp_path / "plain.mat", "w") as f:
        f["YAll"] = np.ones((2, 3))
    with pytest.raises(DataError, match=r"plain\.mat: not a MATLAB \.mat file"):
        MatFile(tmp_path / "plain.mat")


def _manifest(tmp_path, image_name="a.jpg"):
    (tmp_path / "manifest.csv").write_text(f"image,text,labels\n{image_name},a red car,car\n")
    return tmp_path / "manifest.csv"


def test_truncated_jpeg_names_file_and_row(tmp_path):
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "a.jpg").write_bytes(data[: len(data) // 2])
    source = read_dataset("manifest", _manifest(tmp_path))
    with pytest.raises(DataError, match=r"(?i)a\.jpg: cannot decode image of row 0 \(.*truncated"):
        source.images.read(0, 1)


def test_unreadable_image_path_names_file_and_row(tmp_path):
    (tmp_path / "a.jpg").mkdir()  # a path that exists but cannot be read as a file
    with pytest.raises(DataError, match=r"manifest\.csv:2: image file is not a readable file: .*a\.jpg"):
        read_dataset("manifest", _manifest(tmp_path))
    (tmp_path / "a.jpg").rmdir()
    (tmp_path / "a.jpg").symlink_to(tmp_path / "gone.jpg")  # a dangling link
    with pytest.raises(DataError, match=r"manifest\.csv:2: image file not found: .*a\.jpg"):
        read_dataset("manifest", _manifest(tmp_path))


def test_cache_of_another_encoder_is_named(synth_cache):
    config = load("synth", overrides={"encoder": "ViT-L-14__openai", "device": "cpu"})
    with pytest.raises(CacheError, match=r"no complete image/ViT-L-14__openai \(has: cfrh-tiny-vit__none\)"):
        train(config, synth_cache.parent, "synth", progress=False)


def test_non_finite_loss_names_epoch_and_step(synth_cache):
    config = load("synth", overrides={"lr_img": 1e30, "lr_txt": 1e30, "epochs": 2, "hidden": 32, "device": "cpu"})
    with pytest.raises(FloatingPointError, match=r"non-finite loss at epoch \d+, step \d+: .*loss=(nan|inf); lower the learning rates"):
        train(config, synth_cache.parent, "synth", progress=False)


def test_failed_rebuild_leaves_the_cache_intact(synth_dir, synth_cache, tmp_path):
    """A bad label file on a re-run raises before anything is written; the old cache still verifies."""
    data, cache_root = tmp_path / "data", tmp_path / "cache"
    shutil.copytree(synth_dir, data)
    shutil.copytree(synth_cache, cache_root / "synth")
    before = {name: Cache.open(cache_root / "synth").read(name) for name in ("labels", "text/bow", "split/query")}
    lall = next(data.rglob("*lall.mat"))
    write_mat5(lall, {"LAll": np.zeros((240, 6), np.uint8)})  # every row without a label
    with pytest.raises(DataError, match=r"240 rows have no label"):
        features("synth", data, cache_root, chunk_rows=64)
    assert verify(cache_root / "synth") == []
    after = Cache.open(cache_root / "synth")
    for name, array in before.items():
        np.testing.assert_array_equal(after.read(name), array)


def test_config_file_errors_name_the_file_and_section(tmp_path):
    bad_json = tmp_path / "a.json"
    bad_json.write_text("{epochs: 3}")
    with pytest.raises(ConfigError, match=r"a\.json: not valid JSON"):
        load("synth", bad_json)
    wrong = tmp_path / "b.json"
    wrong.write_text(json.dumps({"cfrh": {"phi": "high"}}))
    with pytest.raises(ConfigError, match=r"b\.json \[cfrh\]: 'phi' must be float, got str"):
        load("synth", wrong)
    with pytest.raises(ConfigError, match=r"missing\.json: config file not found"):
        load("synth", tmp_path / "missing.json")
