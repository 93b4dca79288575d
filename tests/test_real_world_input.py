"""Real-world input and misuse (issue #14): every case a clear one-line error naming the file, key,
row or option and what was expected, a resume where one is due, and nothing reused that was made
from other inputs. The README's bad-input table lists each case with its test here."""

import errno
import json
import shutil

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse
from conftest import exported_run, features, interrupt_after_checkpoints, trio
from PIL import Image
from typer.testing import CliRunner

from cfrh.errors import CacheError, ConfigError, DataError
from cfrh.images import open_rgb, to_rgb
from cfrh.text import tokenize
from cfrh_cache.matfile import MatFile
from cfrh_cache.pipeline import FeatureOptions
from cfrh_cache.readers import read_dataset
from cfrh_cache.readers.synth import MAT73_HEADER, write_mat5, write_mat73
from cfrh_cache.store import Cache
from cfrh_cache.verify import verify
from cfrh_train.config import load
from cfrh_train.train import train

FAST = {"epochs": 2, "eval_every": 1, "hidden": 64, "device": "cpu", "bits": 8}


def small_manifest(folder, n=40, text="a red circle"):
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["image,text,labels"]
    for i in range(n):
        Image.new("RGB", (40, 40), ((i * 37) % 255, 80, 160)).save(folder / f"{i}.png")
        rows.append(f"{i}.png,{text} {i % 3} word{i % 5} tag{i % 4},l{i % 3};m{i % 2}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder


# -- resume and reuse --------------------------------------------------------------------------
def test_manifest_cache_resumes_and_reruns(tmp_path):
    data = small_manifest(tmp_path / "m")
    features("manifest", data, tmp_path / "c", chunk_rows=16, max_chunks=1)  # interrupted after one chunk
    report = features("manifest", data, tmp_path / "c", chunk_rows=16)
    assert report.stats.images == 40 - 16
    again = features("manifest", data, tmp_path / "c", chunk_rows=16)
    assert again.stats.skipped and again.written == []
    features("manifest", data, tmp_path / "c", chunk_rows=16, protocol="ucch", resplit=True)
    assert verify(tmp_path / "c" / "manifest", sources=True) == []
    # the same array name from other weights (a random encoder of another seed) is not taken as finished
    with pytest.raises(CacheError, match=r"image/cfrh-tiny-vit__none was made from other inputs \(encoder "
                                         r"random_init_seed: 0 then, 4 now\)"):
        features("manifest", data, tmp_path / "c", chunk_rows=16, protocol="ucch", seed=4, resplit=True)


def test_changed_source_is_refused_then_rebuilt(synth_dir, tmp_path):
    data = tmp_path / "synth"
    shutil.copytree(synth_dir, data)
    features("synth", data, tmp_path / "c", chunk_rows=64)
    before = Cache.open(tmp_path / "c" / "synth").read("image/cfrh-tiny-vit__none")
    yall = scipy.io.loadmat(data / "mirflickr" / "mirflickr25k-yall.mat")["YAll"]
    yall[0, :] = yall[1, :]  # same rows and labels, one text changed
    write_mat5(data / "mirflickr" / "mirflickr25k-yall.mat", {"YAll": yall})
    with pytest.raises(CacheError, match=r"text/bow was made from other inputs \(files mirflickr25k-yall.mat: "
                                         r".*\).*--rebuild"):
        features("synth", data, tmp_path / "c", chunk_rows=64)
    assert any("differs from the file" in p for p in verify(tmp_path / "c" / "synth", sources=True))  # untouched
    report = features("synth", data, tmp_path / "c", chunk_rows=64, rebuild=True)
    assert report.stats.skipped  # the images did not change: their features were kept, not re-encoded
    cache = Cache.open(tmp_path / "c" / "synth")
    np.testing.assert_array_equal(cache.read_text()[0], yall[0])
    np.testing.assert_array_equal(cache.read("image/cfrh-tiny-vit__none"), before)
    assert verify(tmp_path / "c" / "synth", sources=True) == []
    assert not (tmp_path / "c" / ".synth.rebuild").exists()


def test_changed_image_file_and_vocabulary_options_are_refused(tmp_path):
    data = small_manifest(tmp_path / "m")
    features("manifest", data, tmp_path / "c", chunk_rows=16)
    with pytest.raises(CacheError, match=r"text/bow was made from other inputs \(vocabulary min_df: 2 then, 1 now\)"):
        features("manifest", data, tmp_path / "c", chunk_rows=16, min_df=1)
    Image.new("RGB", (40, 40), (1, 2, 3)).save(data / "3.png")
    with pytest.raises(CacheError, match=r"image/cfrh-tiny-vit__none was made from other inputs \(images "):
        features("manifest", data, tmp_path / "c", chunk_rows=16)


@pytest.mark.slow
def test_checkpoint_and_run_folder_are_not_reused_after_resplit(synth_dir, tmp_path, monkeypatch):
    from cfrh_train.missing_runs import ensure_runs
    features("synth", synth_dir, tmp_path / "c", chunk_rows=64)
    config = load("synth", overrides=FAST)
    ckpt = tmp_path / "ckpt.pt"
    with monkeypatch.context() as patch:
        interrupt_after_checkpoints(patch, 1)
        with pytest.raises(KeyboardInterrupt):
            train(config, tmp_path / "c", "synth", progress=False, checkpoint=ckpt)
    features("synth", synth_dir, tmp_path / "c", chunk_rows=64, protocol="ucch", resplit=True)
    resumed = train(config, tmp_path / "c", "synth", progress=False, checkpoint=ckpt)
    fresh = train(config, tmp_path / "c", "synth", progress=False)
    assert resumed["result"]["metrics"] == fresh["result"]["metrics"]  # started afresh on the new split
    assert resumed["result"]["protocol"]["name"] == "ucch"
    args = (["synth"], ["lsh"], [8], [0], tmp_path / "c", tmp_path / "runs", "cpu", False)
    assert ensure_runs(*args, log=lambda m: None) == {"trained": 1, "reused": 0}
    assert ensure_runs(*args, log=lambda m: None) == {"trained": 0, "reused": 1}
    features("synth", synth_dir, tmp_path / "c", chunk_rows=64, protocol="djsrh", resplit=True)
    notes = []
    assert ensure_runs(*args, log=notes.append) == {"trained": 1, "reused": 0}
    assert any("not reused" in n and "split/" in n for n in notes)


# -- ambiguous layouts ---------------------------------------------------------------------------
def read_trio(folder, layout=None):
    from cfrh_cache.readers.base import read_mat_trio
    return read_mat_trio(folder, "mirflickr", "mirflickr25k", n=None, vocab=None, classes=None, image_layout=layout)


def test_sample_count_equal_to_an_image_side_is_refused_until_the_layout_is_given(tmp_path):
    pixels = trio(tmp_path, lambda p, x: write_mat73(p, {"IAll": x.transpose(1, 2, 3, 0)}))  # H×W×3×N, N = H = W
    with pytest.raises(DataError, match=r"mirflickr25k-iall.mat: variable 'IAll' has MATLAB shape 6×6×3×6 and the "
                                        r"sample count 6 equals another axis.*HWCN.*--image-layout"):
        read_trio(tmp_path)
    source = read_trio(tmp_path, "HWCN")
    np.testing.assert_array_equal(source.images.read(2, 3)[0], pixels[2].transpose(2, 0, 1))
    with pytest.raises(DataError, match="--image-layout 'NCHWX': expected the four letters N, C, H, W"):
        read_trio(tmp_path, "NCHWX")


def write_h5py_unreversed(path, variables):
    """What people write with h5py behind a MATLAB header: arrays as they are, no MATLAB_class."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for key, value in variables.items():
            f[key] = value
    with open(path, "r+b") as f:
        f.write((MAT73_HEADER.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM").ljust(512, b"\x00"))


def test_h5py_file_without_matlab_order_is_refused_or_read_the_way_that_fits(tmp_path):
    pixels = trio(tmp_path, lambda p, x: write_h5py_unreversed(p, {"IAll": x.transpose(0, 3, 1, 2)}), n=8, side=6)
    with pytest.raises(DataError, match=r"no MATLAB_class attribute .* height and width may be swapped.*--image-layout"):
        read_trio(tmp_path)
    source = read_trio(tmp_path, "WHCN")  # h5py's (N, C, H, W) reversed
    np.testing.assert_array_equal(source.images.read(1, 2)[0], pixels[1].transpose(2, 0, 1))
    labels = np.eye(4, dtype=np.uint8)[np.arange(10) % 4]
    write_h5py_unreversed(tmp_path / "l.mat", {"LAll": labels})  # (10, 4) in h5py: only "as stored" fits 10×4
    with MatFile(tmp_path / "l.mat") as mat:
        np.testing.assert_array_equal(mat.var("LAll").expect_shape((10, 4)).read(), labels)
    write_h5py_unreversed(tmp_path / "sq.mat", {"LAll": labels[:4]})  # square: both readings fit
    with MatFile(tmp_path / "sq.mat") as mat, pytest.raises(DataError, match="both fit 4×4"):
        mat.var("LAll").expect_shape((4, 4))


def test_matlab_sparse_tag_matrices_in_both_layouts(tmp_path):
    dense = (np.random.default_rng(1).random((7, 9)) < 0.3).astype(np.float64)
    scipy.io.savemat(tmp_path / "v5.mat", {"YAll": scipy.sparse.csc_matrix(dense)})
    csc = scipy.sparse.csc_matrix(dense)
    with h5py.File(tmp_path / "v73.mat", "w", userblock_size=512) as f:
        g = f.create_group("YAll")
        g.attrs["MATLAB_class"] = np.bytes_("double")
        g.attrs["MATLAB_sparse"] = np.uint64(dense.shape[0])
        g["data"], g["ir"], g["jc"] = csc.data, csc.indices.astype(np.uint64), csc.indptr.astype(np.uint64)
    with open(tmp_path / "v73.mat", "r+b") as f:
        f.write((MAT73_HEADER.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM").ljust(512, b"\x00"))
    for name in ("v5.mat", "v73.mat"):
        with MatFile(tmp_path / name) as mat:
            var = mat.var("YAll").expect_shape((7, 9))
            assert var.sparse
            np.testing.assert_array_equal(var.read().toarray(), dense)


# -- pixels --------------------------------------------------------------------------------------
def test_16bit_float_and_exif_images_decode_as_seen(tmp_path):
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 … 65520
    Image.fromarray(ramp).save(tmp_path / "a.png")
    got = np.asarray(open_rgb(tmp_path / "a.png"))[..., 0].astype(int)
    np.testing.assert_allclose(got, np.round(ramp / 257), atol=1)  # not all white
    floats = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    Image.fromarray(floats, "F").save(tmp_path / "f.tif")
    got = np.asarray(open_rgb(tmp_path / "f.tif"))[..., 0].astype(int)
    np.testing.assert_allclose(got, np.round(floats * 255), atol=1)  # not all black
    wide = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = wide.getexif()
    exif[0x0112] = 6  # orientation: rotate 90° to display
    wide.save(tmp_path / "r.jpg", exif=exif)
    assert open_rgb(tmp_path / "r.jpg").size == (20, 40)
    assert to_rgb(Image.new("I;16", (3, 3), 65535)).getpixel((0, 0)) == (255, 255, 255)


def test_oversized_image_names_file_and_row(tmp_path, monkeypatch):
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 pixels > 2 × the guard: a bomb to Pillow
    with pytest.raises(DataError, match=r"big.png: image of row 7 too large to decode safely"):
        open_rgb(tmp_path / "big.png", row=7)


# -- manifests and text ------------------------------------------------------------------------
def test_manifest_encodings_long_fields_and_comma_labels(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 8), (9, 9, 9)).save(tmp_path / "b.png")
    long_text = "word " * 40000  # 200 KB, over csv's 128 KiB default
    body = f"image,text,labels\na.png,{long_text},x,y\nb.png,café tags,z\n"
    (tmp_path / "manifest.csv").write_bytes(b"\xef\xbb\xbf" + body.replace(",x,y", ',"x,y"').encode("utf-8"))
    source = read_dataset("manifest", tmp_path)  # BOM accepted, long field read
    assert source.texts[1] == "café tags" and len(source.texts[0]) == len(long_text)
    assert source.label_names == ["x,y", "z"] and any("contain ','" in n for n in source.notes)
    (tmp_path / "manifest.csv").write_bytes("image,text\na.png,ok\nb.png,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"manifest.csv:3: not UTF-8 .*re-save the manifest as UTF-8"):
        read_dataset("manifest", tmp_path)


def test_cjk_and_emoji_are_tokens():
    assert tokenize("红色汽车 🚗 on the road") == ["红", "色", "汽", "车", "🚗", "road"]
    assert tokenize("東京タワー") == ["東", "京", "タ", "ワ", "ー"]


def test_shipped_bow_with_nan_or_negative_values_is_refused(tmp_path):
    trio(tmp_path, lambda p, x: write_mat73(p, {"IAll": x.transpose(1, 2, 3, 0)}), n=6, side=5)
    for bad, what in ((np.nan, "NaN/Inf"), (-1.0, "negative values")):
        yall = np.ones((6, 5))
        yall[4, 2] = bad
        write_mat5(tmp_path / "mirflickr25k-yall.mat", {"YAll": yall})
        with pytest.raises(DataError, match=rf"mirflickr25k-yall.mat: variable 'YAll' has {what} in rows 4 .*"
                                            r"non-negative"):
            read_trio(tmp_path)


# -- options and config keys ---------------------------------------------------------------------
@pytest.mark.parametrize("key, value, expected", [
    ("batch_size", -5, "≥ 1"), ("epochs", 0, "≥ 1"), ("topk", 0, "≥ 1"), ("hidden", 0, "≥ 1"),
    ("lr_img", -1, "> 0"), ("bits", 0, "≥ 1"), ("bits", -8, "≥ 1"), ("momentum", 1.0, "< 1"),
    ("affinity_map", "cosine", "one of cos, 2cos-1"), ("device", "gpu", "auto, cpu"),
])
def test_config_values_out_of_range_name_the_key(key, value, expected):
    with pytest.raises(ConfigError, match=rf"command line: '{key}' = .* expected .*{expected}"):
        load("synth", overrides={key: value})


def test_stage1_options_are_checked_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match=r"--batch-size -1: expected an integer ≥ 1"):
        FeatureOptions(batch_size=-1)
    with pytest.raises(ConfigError, match=r"--protocol 'nope'"):
        FeatureOptions(protocol="nope")


def test_cuda_without_cuda_is_a_user_error(monkeypatch):
    import torch

    from cfrh.devices import resolve_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"--device cuda: torch .* sees no CUDA device"):
        resolve_device("cuda")


def test_full_or_read_only_disk_names_the_path(synth_dir, tmp_path, monkeypatch):
    from cfrh_cache import store
    for code, words in ((errno.ENOSPC, "the disk is full"), (errno.EROFS, "the file system is read-only")):
        def write(self, name, *args, code=code, **kwargs):
            raise OSError(code, "refused", str(self.path / name))
        with monkeypatch.context() as patch:
            patch.setattr(store.Cache, "write", write)
            with pytest.raises(CacheError, match=rf"c{code}/synth/labels: cannot write \({words}"):
                features("synth", synth_dir, tmp_path / f"c{code}", chunk_rows=64)


# -- search and table ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def manifest_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mr")
    data = small_manifest(root / "m", n=60)
    features("manifest", data, root / "c", chunk_rows=32)
    config = load("manifest", overrides={"method": "lsh", "bits": 16, "device": "cpu"})
    return exported_run(config, root / "c", "manifest", root / "runs")


def test_search_refuses_empty_unknown_text_and_rows_out_of_range(manifest_run):
    from cfrh_cli import search_app
    runner = CliRunner()
    for query in ("", "zzz qqq"):
        out = runner.invoke(search_app, [str(manifest_run), "--text", query])
        assert out.exit_code == 1 and "none of its words is in the cache's vocabulary" in out.output
    for row in ("60", "-1"):
        out = runner.invoke(search_app, [str(manifest_run), "--row", row])
        assert out.exit_code == 1 and f"--row {row}: out of range; the cache has rows 0..59" in out.output
    assert runner.invoke(search_app, [str(manifest_run), "--row", "0", "-k", "0"]).exit_code == 2
    hit = json.loads(runner.invoke(search_app, [str(manifest_run), "--row", "3", "--json", "-k", "1"]).output)["hits"][0]
    assert hit["image"].endswith(".png") and "red circle" in hit["text"]  # read from the cache, not the dataset


def test_truncated_result_json_is_named_by_the_table_and_retrained(manifest_run, tmp_path):
    from cfrh_train.missing_runs import ensure_runs
    from cfrh_train.table import make_table
    runs = tmp_path / "runs"
    shutil.copytree(manifest_run.parents[3], runs)
    record = runs / "manifest" / "lsh" / "16bit" / "seed0" / "result.json"
    record.write_text(record.read_text()[:100])
    with pytest.raises(CacheError, match=r"result.json: not a complete run record .*delete the run folder"):
        make_table(runs)
    record.write_text("")
    cache_dir = manifest_run.parents[4] / "c"
    assert ensure_runs(["manifest"], ["lsh"], [16], [0], cache_dir, runs, "cpu", False, log=lambda m: None)["trained"] == 1
    assert make_table(runs)["n_runs"] == 1


def test_table_keeps_a_topk_100_block(manifest_run, tmp_path):
    from cfrh_train.results import read_result, write_result
    from cfrh_train.table import make_table
    runs = tmp_path / "runs"
    shutil.copytree(manifest_run.parents[3], runs)
    folder = runs / "manifest" / "lsh" / "16bit" / "seed0"
    result = read_result(folder)
    result["config"]["topk"] = 100
    for d in ("i2t", "t2i"):
        result["metrics"][d]["map@100"] = result["metrics"][d].pop("map@50")
    write_result(folder, {k: v for k, v in result.items() if k != "schema_version"})
    metrics = {b.metric for b in make_table(runs)["blocks"]}
    assert metrics == {"map@100", "map@all"}


def test_user_errors_exit_1_usage_errors_2_bugs_keep_their_traceback(synth_dir, tmp_path, monkeypatch):
    from cfrh_cache import pipeline
    from cfrh_cli import cache as cli
    runner = CliRunner()
    args = ["features", "synth", "--root", str(synth_dir), "--cache-dir", str(tmp_path), "--model", "cfrh-tiny-vit",
            "--pretrained", "none", "--workers", "0", "--no-progress"]
    assert runner.invoke(cli.app, [*args, "--image-layout", "XYZW"]).exit_code == 1
    assert runner.invoke(cli.app, [*args, "--protocol", "nope"]).exit_code == 2

    def broken(*a, **k):
        raise KeyError("a bug")
    monkeypatch.setattr(pipeline, "build_features", broken)
    out = runner.invoke(cli.app, args)
    assert isinstance(out.exception, KeyError)  # not turned into a user error


def test_sparse_tags_and_labels_go_through_the_reader_into_the_cache(tmp_path):
    pixels = trio(tmp_path, lambda p, x: write_mat73(p, {"IAll": x.transpose(1, 2, 3, 0)}), n=6, side=5)
    yall = (np.random.default_rng(2).random((6, 5)) < 0.4).astype(np.float64)
    labels = np.eye(3)[np.arange(6) % 3]
    scipy.io.savemat(tmp_path / "mirflickr25k-yall.mat", {"YAll": scipy.sparse.csc_matrix(yall)})
    scipy.io.savemat(tmp_path / "mirflickr25k-lall.mat", {"LAll": scipy.sparse.csc_matrix(labels)})
    source = read_trio(tmp_path)
    np.testing.assert_array_equal(source.bow.toarray(), yall)
    np.testing.assert_array_equal(source.labels, labels)
    assert source.images.read(0, 1).shape == (1, 3, 5, 5) and pixels.shape[0] == 6


def test_a_cache_of_cfrh_0_2_is_adopted_where_its_attributes_tell_its_inputs(synth_dir, tmp_path):
    """Arrays written before made_from existed: kept (not re-encoded) where the cache's own
    checksums and attributes show the same inputs; refused where they cannot tell (image files)."""
    features("synth", synth_dir, tmp_path / "c", chunk_rows=64)
    data = small_manifest(tmp_path / "m")
    features("manifest", data, tmp_path / "c", chunk_rows=16)
    for name in ("synth", "manifest"):
        for added in ("meta", "text/raw"):  # 0.2 did not store them
            shutil.rmtree(tmp_path / "c" / name / added, ignore_errors=True)
        cache = Cache.open(tmp_path / "c" / name, mode="a")
        for array in cache.names():
            cache.group[array].attrs.update({"made_from": None})
        files = [{k: v for k, v in f.items() if f["name"] != "<image files>" or k != "sha256"}
                 for f in cache.attrs["source_files"]]
        cache.update_attrs(source_files=files)
    again = features("synth", synth_dir, tmp_path / "c", chunk_rows=64)
    assert again.stats.skipped and again.written == ["text/raw", "meta/image_path"]  # features kept, strings added
    assert Cache.open(tmp_path / "c" / "synth").array("labels").attrs["made_from"] is not None
    with pytest.raises(CacheError, match=r"image/cfrh-tiny-vit__none was made from other inputs"):
        features("manifest", data, tmp_path / "c", chunk_rows=16)
