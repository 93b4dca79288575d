"""Codes out (issue #27): a run's codes in the files other tools read, each read back by that tool."""

import numpy as np
import pytest
from conftest import exported_run
from typer.testing import CliRunner

from cfrh.codes import pack_codes
from cfrh_cache.store import Cache
from cfrh_cli import app
from cfrh_search.index import Index
from cfrh_search.queries import Queries
from cfrh_search.topk import hamming_topk
from cfrh_train.config import load


@pytest.fixture(scope="module")
def run_folder(synth_cache, tmp_path_factory):
    config = load("synth", overrides={"method": "cfrh", "bits": 24, "device": "cpu", "epochs": 2, "hidden": 32})
    return exported_run(config, synth_cache.parent, "synth", tmp_path_factory.mktemp("runs"))


def export(run_folder, synth_cache, path, *extra):
    out = CliRunner().invoke(app, ["export", str(run_folder), "--to", str(path), "--cache-dir",
                                   str(synth_cache.parent), *extra])
    assert out.exit_code == 0, out.output
    return path


def test_npy_codes_read_back_with_numpy_and_search_alike_in_faiss(run_folder, synth_cache, tmp_path):
    table = np.load(export(run_folder, synth_cache, tmp_path / "codes.npy"), allow_pickle=False)
    codes = np.load(run_folder / "codes.npz")
    db = table[table["split"] == "database"]
    np.testing.assert_array_equal(db["row"], codes["database_index"])
    np.testing.assert_array_equal(db["image_code"], codes["database_image"])
    labels = Cache.open(synth_cache).read("labels")
    np.testing.assert_array_equal(db["labels"], labels[codes["database_index"]])
    bits = np.unpackbits(db["text_packed"], axis=1, bitorder="little")[:, :24]
    np.testing.assert_array_equal(bits.astype(int) * 2 - 1, codes["database_text"])
    faiss = pytest.importorskip("faiss")
    index = faiss.IndexBinaryFlat(24)
    index.add(np.ascontiguousarray(db["text_packed"]))
    q = table[table["split"] == "query"]["image_packed"][:5]
    dists, _ = index.search(np.ascontiguousarray(q), 10)
    _, ours = hamming_topk(pack_codes(codes["query_image"][:5]), pack_codes(codes["database_text"]), 24, 10)
    np.testing.assert_array_equal(dists, ours)  # the same distances: the packing is faiss's


def test_parquet_codes_read_back_with_pandas_and_duckdb(run_folder, synth_cache, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    path = export(run_folder, synth_cache, tmp_path / "codes.parquet", "--real")
    table = pq.read_table(path)
    assert table.schema.metadata[b"cfrh.bits"] == b"24" and table.num_rows == len(np.load(run_folder / "codes.npz")["database_index"]) + 24
    real = np.stack(table.column("image_real").to_numpy(zero_copy_only=False))
    assert real.shape[1] == 24
    np.testing.assert_array_equal(np.where(real >= 0, 1, -1), np.stack(table.column("image_code").to_numpy(zero_copy_only=False)))
    index = Index(run_folder)  # the real outputs are what the search index computes for those rows
    rows = table.column("row").to_numpy()[:4]
    np.testing.assert_allclose(Queries(index, "cpu").hash(image=index.rows_of(rows, "image"))[0], real[:4], rtol=1e-5, atol=1e-6)
    pd = pytest.importorskip("pandas")
    frame = pd.read_parquet(path)
    assert set(frame["split"]) == {"database", "query"} and len(frame["image_packed"].iloc[0]) == 3
    duckdb = pytest.importorskip("duckdb")
    counts = duckdb.sql(f"select split, count(*) from read_parquet('{path}') group by split order by split").fetchall()
    assert counts == [("database", 216), ("query", 24)]


def test_codes_out_refuses_what_it_cannot_write(run_folder, synth_cache, tmp_path):
    for target, says in ((tmp_path / "codes.csv", "expected a file ending in .parquet or .npy"),):
        out = CliRunner().invoke(app, ["export", str(run_folder), "--to", str(target), "--cache-dir", str(synth_cache.parent)])
        assert out.exit_code == 1 and says in out.output


def test_the_cache_opens_in_xarray_and_pandas_with_named_axes(synth_cache):
    xr = pytest.importorskip("xarray")
    pd = pytest.importorskip("pandas")
    cache = Cache.open(synth_cache)
    root = xr.open_zarr(synth_cache, consolidated=False)
    assert root["labels"].dims == ("row", "labels_1") and root.sizes["row"] == cache.attrs["n"]
    images = xr.open_zarr(synth_cache, group="image", consolidated=False)
    name = cache.encoders()[0]
    assert images[name].dims[0] == "row" and images[name].shape[0] == cache.attrs["n"]
    labels = pd.DataFrame(root["labels"].values, columns=cache.array("labels").attrs.get("label_names"))
    assert labels.shape == (cache.attrs["n"], cache.read("labels").shape[1])
    raw = cache.array("text/raw/utf8").attrs["strings"]
    assert "text/raw/offsets[r]" in raw and cache.read_strings("text/raw", [0])[0]
