"""Web-scale image–text shards in (issue #27): WebDataset tar shards and img2dataset Parquet files,
written here, read into a cache row range by row range, bad samples named or skipped."""

import io
import json
import tarfile

import numpy as np
import pytest
from conftest import TINY
from PIL import Image
from typer.testing import CliRunner

from cfrh.errors import DataError
from cfrh_cache.options import FeatureOptions
from cfrh_cache.pipeline import build_features
from cfrh_cache.readers import read_dataset
from cfrh_cache.readers.shards import expand
from cfrh_cache.store import Cache
from cfrh_cache.verify import verify
from cfrh_cli import app

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def jpeg(colour, seed) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(COLOURS[colour]) + rng.normal(0, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG")
    return out.getvalue()


def samples(n=60, start=0):
    names = list(COLOURS)
    for i in range(start, start + n):
        colour = names[i % 3]
        yield f"{i:06d}", jpeg(colour, i), f"a {colour} square number {i % 7}", {"tags": [colour], "url": f"u{i}"}


def write_tar(path, items, broken=()):
    with tarfile.open(path, "w") as tar:
        for key, image, text, record in items:
            parts = {".jpg": image, ".txt": text.encode(), ".json": json.dumps(record).encode()}
            if key in broken:
                parts[".jpg"] = b"not a jpeg at all"
            for ext, data in parts.items():
                info = tarfile.TarInfo(key + ext)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def test_brace_patterns_expand_as_webdataset_writes_them():
    assert expand("s/{000008..000011}.tar") == [f"s/0000{i:02d}.tar" for i in (8, 9, 10, 11)]
    assert expand("{a,b}/x{1..2}") == ["a/x1", "a/x2", "b/x1", "b/x2"]


@pytest.mark.slow
def test_webdataset_shards_become_a_cache_that_resumes_and_verifies(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    for s in range(3):
        write_tar(shards / f"{s:06d}.tar", samples(60, start=60 * s))
    pattern = str(shards / "{000000..000002}.tar")
    source = read_dataset("webdataset", pattern, label_field="tags")
    assert source.n == 180 and source.label_names == ["blue", "green", "red"] and len(source.files) == 3
    assert source.texts[61] == "a green square number 5"
    np.testing.assert_array_equal(np.asarray(source.images.read(61, 62)[0]).mean((0, 1)).argmax(), 1)  # green
    options = FeatureOptions(**{**TINY, "chunk_rows": 32, "label_field": "tags"})
    build_features("webdataset", pattern, tmp_path / "cache", options, max_chunks=2, name="cc")  # interrupted
    report = build_features("webdataset", pattern, tmp_path / "cache", options, name="cc")  # resumed
    assert report.cache == tmp_path / "cache" / "cc" and not verify(tmp_path / "cache" / "cc", sources=True)
    whole = build_features("webdataset", pattern, tmp_path / "whole", options, name="cc")
    name = Cache.open(whole.cache).encoders()[0]
    np.testing.assert_array_equal(Cache.open(report.cache).read(f"image/{name}"), Cache.open(whole.cache).read(f"image/{name}"))
    other = FeatureOptions(**{**TINY, "chunk_rows": 32})  # no labels now: the labels were made from another reading
    with pytest.raises(Exception, match="labels"):
        build_features("webdataset", pattern, tmp_path / "cache", other, name="cc")


def test_a_bad_shard_or_sample_is_named_and_skipped_on_request(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    items = list(samples(30))
    write_tar(shards / "000000.tar", items, broken={"000004"})
    no_image = [(k, i, t, r) for k, i, t, r in samples(10, start=30)]
    with tarfile.open(shards / "000001.tar", "w") as tar:  # one sample without its image
        for key, image, text, record in no_image:
            for ext, data in ((".txt", text.encode()), *(((".jpg", image),) if key != "000033" else ())):
                info = tarfile.TarInfo(key + ext)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    data = (shards / "000000.tar").read_bytes()
    (shards / "000002.tar").write_bytes(data[: len(data) // 2])  # truncated
    for shard, says in (("000000.tar", "sample '000004': the image does not decode"),
                        ("000001.tar", "sample '000033' has no image"), ("000002.tar", "a broken or truncated shard")):
        with pytest.raises(DataError, match=f"{shard}: {says}.*--on-error skip leaves such samples out"):
            read_dataset("webdataset", shards / shard)
    source = read_dataset("webdataset", shards, on_error="skip")
    assert source.n == 29 + 9  # the truncated shard: all of it
    assert "000004" not in "".join(source.image_paths) and source.reading["skipped"] == 3
    assert any("skipped" in note for note in source.notes)
    out = CliRunner().invoke(app, ["cache", "features", "webdataset", "--root", str(shards), "--cache-dir",
                                   str(tmp_path / "c"), "--model", "cfrh-tiny-vit", "--pretrained", "none",
                                   "--workers", "0", "--no-progress"])
    assert out.exit_code == 1 and "000001.tar: sample '000033' has no image" in out.output


def test_parquet_shards_with_image_bytes_become_a_cache(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    rows = list(samples(50))
    table = pa.table({"key": [k for k, *_ in rows], "jpg": [i for _, i, _, _ in rows],
                      "caption": [t for _, _, t, _ in rows], "json": [json.dumps(r) for *_, r in rows]})
    pq.write_table(table, tmp_path / "part-00000.parquet", row_group_size=16)
    source = read_dataset("parquet", tmp_path / "part-00000.parquet", label_field="tags")
    assert source.n == 50 and source.label_names == ["blue", "green", "red"]
    pixels = np.asarray(source.images.read(33, 36)[2])  # rows of the third row group
    assert pixels.mean((0, 1)).argmax() == ["red", "green", "blue"].index(list(COLOURS)[35 % 3])
    report = build_features("parquet", tmp_path / "part-00000.parquet", tmp_path / "cache",
                            FeatureOptions(**{**TINY, "label_field": "tags"}), name="pq")
    cache = Cache.open(report.cache)
    assert cache.attrs["n"] == 50 and cache.read("labels").shape == (50, 3)
    assert cache.read_strings("text/raw", [7])[0] == "a green square number 0"
