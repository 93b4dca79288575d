"""Bring what you have (issue #16): precomputed features in every layout the field ships, dense
text through every method, WIKI from its shipped features alone."""

import h5py
import numpy as np
import pytest
import torch
from conftest import exported_run, features, topics
from typer.testing import CliRunner

from cfrh.errors import DataError
from cfrh_cache.importer import import_source
from cfrh_cache.pipeline import FeatureOptions, build_source
from cfrh_cache.readers import read_dataset
from cfrh_cache.readers.synth import write_mat5, write_mat73
from cfrh_cache.store import Cache
from cfrh_cache.verify import verify
from cfrh_train.config import load
from cfrh_train.methods import build
from cfrh_train.train import train


def import_npy(tmp_path, name="dgcpn", signed=False, **kw):
    image, text, labels = topics(signed=signed)
    np.save(tmp_path / "flickr_vgg19.npy", image)
    np.save(tmp_path / "tags.npy", text)
    np.save(tmp_path / "label.npy", labels)
    source = import_source(name, str(tmp_path / "flickr_vgg19.npy"), str(tmp_path / "tags.npy"),
                           str(tmp_path / "label.npy"), text_kind="dense", encoder_name="vgg19", **kw)
    build_source(source, name, tmp_path, tmp_path / "c", FeatureOptions(progress=False))
    return image, text, labels


def test_dgcpn_npy_files_round_trip_and_verify(tmp_path):
    image, text, labels = import_npy(tmp_path)
    cache = Cache.open(tmp_path / "c" / "dgcpn")
    np.testing.assert_allclose(cache.read("image/vgg19").astype(np.float32), image, rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(cache.read_text(), text)
    np.testing.assert_array_equal(cache.read("labels"), labels)
    assert cache.attrs["text_kind"] == "dense" and cache.text_kind() == "dense"
    enc = cache.attrs["encoders"]["vgg19"]
    assert enc["model"] == "precomputed" and enc["origin"] == {"file": "flickr_vgg19.npy", "key": ""}
    assert [f["name"] for f in cache.attrs["source_files"]] == ["flickr_vgg19.npy", "tags.npy", "label.npy"]
    assert verify(tmp_path / "c" / "dgcpn", sources=True) == []


@pytest.mark.parametrize("layout", ["npz", "mat5", "mat73", "h5", "parquet", "parquet-columns", "clip-retrieval"])
def test_every_layout_round_trips(layout, tmp_path):
    image, text, labels = topics(n=90)
    if layout == "npz":
        np.savez(tmp_path / "f.npz", img=image, txt=text, lab=labels)
        specs = [f"{tmp_path}/f.npz:img", f"{tmp_path}/f.npz:txt", f"{tmp_path}/f.npz:lab"]
    elif layout in ("mat5", "mat73"):
        (write_mat5 if layout == "mat5" else write_mat73)(tmp_path / "f.mat", {"I": image, "T": text, "L": labels})
        specs = [f"{tmp_path}/f.mat:I", f"{tmp_path}/f.mat:T", f"{tmp_path}/f.mat:L"]
    elif layout == "h5":
        with h5py.File(tmp_path / "f.h5", "w") as f:
            f["feat/img"], f["feat/txt"], f["lab"] = image, text, labels
        specs = [f"{tmp_path}/f.h5:feat/img", f"{tmp_path}/f.h5:feat/txt", f"{tmp_path}/f.h5:lab"]
    elif layout.startswith("parquet"):
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq
        if layout == "parquet":
            pq.write_table(pa.table({"img": list(image), "txt": list(text)}), tmp_path / "f.parquet")
            specs = [f"{tmp_path}/f.parquet:img", f"{tmp_path}/f.parquet:txt"]
        else:
            pq.write_table(pa.table({f"i{j}": image[:, j] for j in range(image.shape[1])}), tmp_path / "i.parquet")
            pq.write_table(pa.table({f"t{j}": text[:, j] for j in range(text.shape[1])}), tmp_path / "t.parquet")
            specs = [str(tmp_path / "i.parquet"), str(tmp_path / "t.parquet")]
        np.save(tmp_path / "l.npy", labels)
        specs.append(str(tmp_path / "l.npy"))
    else:  # clip-retrieval: img_emb/img_emb_{0,1}.npy, text_emb/text_emb_{0,1}.npy
        for sub, values in (("img_emb", image), ("text_emb", text)):
            (tmp_path / "out" / sub).mkdir(parents=True)
            for part, rows in enumerate((values[:50], values[50:])):
                np.save(tmp_path / "out" / sub / f"{sub}_{part}.npy", rows)
        np.save(tmp_path / "l.npy", labels)
        specs = [str(tmp_path / "out"), str(tmp_path / "out"), str(tmp_path / "l.npy")]
    source = import_source("mine", *specs, text_kind="dense")
    np.testing.assert_allclose(source.images.features, image, rtol=1e-6)
    np.testing.assert_allclose(source.bow, text, rtol=1e-6)
    np.testing.assert_array_equal(source.labels, labels)


def test_split_files_mat_one_based_and_masks(tmp_path):
    image, text, labels = topics(n=60)
    np.save(tmp_path / "i.npy", image), np.save(tmp_path / "t.npy", text), np.save(tmp_path / "l.npy", labels)
    write_mat5(tmp_path / "q.mat", {"idx": np.arange(1, 11)})  # MATLAB's 1-based rows 1..10
    np.save(tmp_path / "db.npy", np.r_[np.zeros(10, bool), np.ones(50, bool)])  # a mask
    np.save(tmp_path / "tr.npy", np.arange(10, 40))
    source = import_source("s", *(str(tmp_path / f) for f in ("i.npy", "t.npy", "l.npy")), query=f"{tmp_path}/q.mat:idx",
                           database=str(tmp_path / "db.npy"), train=str(tmp_path / "tr.npy"), text_kind="dense")
    build_source(source, "s", tmp_path, tmp_path / "c", FeatureOptions(progress=False))
    split = Cache.open(tmp_path / "c" / "s").split()
    np.testing.assert_array_equal(split["query"], np.arange(10))
    np.testing.assert_array_equal(split["database"], np.arange(10, 60))
    np.testing.assert_array_equal(split["train"], np.arange(10, 40))
    assert np.isin(split["val"], split["database"]).all() and not np.intersect1d(split["val"], split["query"]).size


def test_bad_imports_name_the_file_and_what_was_expected(tmp_path):
    image, text, labels = topics(n=40)
    save = lambda name, value: np.save(tmp_path / name, value) or str(tmp_path / name)
    i, t, lab = save("i.npy", image), save("t.npy", text), save("l.npy", labels)
    cases = [
        ((i, save("short.npy", text[:30]), lab), r"short.npy: text has 30 rows, the image features 40"),
        ((i, save("tt.npy", text.T.copy()), lab), r"tt.npy: text has 10 rows, the image features 40 \(it looks transposed"),
        ((i, save("nan.npy", np.where(np.arange(40)[:, None] == 7, np.nan, text)), lab), r"nan.npy: text has NaN/Inf in rows \[7\]"),
        ((i, t, save("l2.npy", labels * 2)), r"l2.npy: variable .* must hold 0/1 multi-hot labels"),
        ((i, save("neg.npy", text - 1), lab), r"neg.npy: variable .* has negative values .*--text-kind dense"),
        ((f"{tmp_path}/nope.npy", t, lab), r"nope.npy: file not found"),
    ]
    for args, message in cases:
        with pytest.raises(DataError, match=message):
            import_source("x", *args, text_kind="bow" if "neg" in message else "dense")
    np.save(tmp_path / "q.npy", np.arange(10)), np.save(tmp_path / "db.npy", np.arange(5, 40))
    with pytest.raises(DataError, match=r"5 rows are both query and database"):
        import_source("x", i, t, lab, query=str(tmp_path / "q.npy"), database=str(tmp_path / "db.npy"), text_kind="dense")
    np.save(tmp_path / "db.npy", np.arange(12, 40))
    with pytest.raises(DataError, match=r"2 of 40 rows are neither query nor database"):
        import_source("x", i, t, lab, query=str(tmp_path / "q.npy"), database=str(tmp_path / "db.npy"), text_kind="dense")
    np.savez(tmp_path / "two.npz", a=image, b=text)
    with pytest.raises(DataError, match=r"two.npz: holds 2 arrays \(a, b\); name one as two.npz:KEY"):
        import_source("x", str(tmp_path / "two.npz"), t, lab, text_kind="dense")


def test_import_cli_then_train_two_commands(tmp_path):
    from cfrh_cli import app
    image, text, labels = topics(n=300)
    np.save(tmp_path / "flickr_vgg19.npy", image), np.save(tmp_path / "tags.npy", text), np.save(tmp_path / "label.npy", labels)
    runner = CliRunner()
    out = runner.invoke(app, ["cache", "import", "mine", "--image", str(tmp_path / "flickr_vgg19.npy"), "--text",
                              str(tmp_path / "tags.npy"), "--labels", str(tmp_path / "label.npy"), "--text-kind",
                              "dense", "--encoder-name", "vgg19", "--cache-dir", str(tmp_path / "c"), "--no-progress"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["train", "--dataset", "mine", "--bits", "16", "--cache-dir", str(tmp_path / "c"),
                              "--runs-dir", str(tmp_path / "runs"), "--set", "epochs=2", "--set", "hidden=64",
                              "--no-progress"])
    assert out.exit_code == 0, out.output
    from cfrh_train.results import read_result
    result = read_result(tmp_path / "runs" / "mine" / "cfrh" / "16bit" / "seed0")
    assert result["encoder"]["tag"] == "vgg19" and result["text"] == {"input": "dataset", "kind": "dense"}


def wiki_features(root, single=False):
    """WIKI as distributed without images: raw_features.mat (I, T) and the two lists, or WIKI.mat."""
    image, text, labels = topics(n=90, classes=10, dim=128)
    classes = labels.argmax(1) + 1  # single-label
    tr, te = slice(0, 60), slice(60, 90)
    root.mkdir(parents=True, exist_ok=True)
    if single:
        write_mat5(root / "WIKI.mat", {"I_tr": image[tr], "I_te": image[te], "T_tr": text[tr], "T_te": text[te],
                                       "L_tr": classes[tr][:, None], "L_te": classes[te][:, None]})
    else:
        for name, rows in (("trainset", range(60)), ("testset", range(60, 90))):
            (root / f"{name}_txt_img_cat.list").write_text("".join(f"t{i} i{i} {classes[i]}\n" for i in rows))
        write_mat73(root / "raw_features.mat", {"I_tr": image[tr], "I_te": image[te], "T_tr": text[tr], "T_te": text[te]})
    return image, text, classes


@pytest.mark.parametrize("single", [False, True])
def test_wiki_from_its_shipped_features_alone(single, tmp_path):
    image, text, classes = wiki_features(tmp_path / "wiki", single)
    source = read_dataset("wiki", tmp_path / "wiki")
    assert source.images.kind == "features" and source.text_kind == "dense"
    np.testing.assert_allclose(source.images.features, image, rtol=1e-6)
    np.testing.assert_array_equal(source.labels.argmax(1) + 1, classes)
    np.testing.assert_array_equal(source.fixed_split["query"], np.arange(60, 90))
    report = features("wiki", tmp_path / "wiki", tmp_path / "c")
    assert report.encoder_tag == "sift-bovw__shipped" and not report.stats.skipped
    split = Cache.open(tmp_path / "c" / "wiki").split()
    np.testing.assert_array_equal(split["train"], np.setdiff1d(np.arange(60), split["val"]))  # val held out
    out = train(load("wiki", overrides={"method": "cfrh", "bits": 16, "epochs": 2, "eval_every": 1, "device": "cpu"}),
                tmp_path / "c", "wiki", progress=False)
    assert out["result"]["text"]["kind"] == "dense" and 0 <= out["result"]["metrics"]["i2t"]["map@50"] <= 1


@pytest.fixture(scope="module")
def dense_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("dense")
    import_npy(root, name="topics")
    return root / "c"


@pytest.mark.parametrize("method", ["cfrh", "jdsh", "djsrh", "dgcpn", "ucch", "ccah", "ucmfh", "lsh"])
def test_every_method_trains_on_dense_text(method, dense_cache):
    from cfrh_train.config import defaults
    small = {"img_hidden": [64], "txt_hidden": [64], "hidden": 64, "epochs": 2, "eval_every": 1, "batch_size": 64,
             "gat_hidden": 16, "gat_heads": 2, "fusion_heads": 1, "fusion_ff": 64, "head_width": 64}
    config = load("topics", overrides={"method": method, "bits": 16, "device": "cpu",
                                       **{k: v for k, v in small.items() if k in defaults(method)}})
    out = train(config, dense_cache, "topics", progress=False)
    for d in ("i2t", "t2i"):
        assert 0 <= out["result"]["metrics"][d]["map@50"] <= 1
    assert out["text_kind"] == "dense" and out["result"]["text"]["kind"] == "dense"


def test_cfrh_beats_lsh_on_dense_topics(dense_cache):
    runs = {}
    for method in ("cfrh", "lsh"):
        extra = {"hidden": 256} if method == "cfrh" else {}
        config = load("topics", overrides={"method": method, "bits": 32, "epochs": 30, "eval_every": 5,
                                           "device": "cpu", **extra})
        runs[method] = train(config, dense_cache, "topics", progress=False)["result"]["metrics"]
    for d in ("i2t", "t2i"):
        assert runs["cfrh"][d]["map@50"] > runs["lsh"][d]["map@50"] + 0.03, (d, runs)


def test_text_kind_is_honoured_by_the_decoder_and_the_input_layer():
    from cfrh_train.config import defaults
    from cfrh_train.methods.nets import BowLinear
    config = {**defaults("cfrh"), "hidden": 16, "bits": 8}
    dense, bow = build("cfrh", config, 12, 10, "dense"), build("cfrh", config, 12, 10, "bow")
    x = torch.randn(5, 10)
    assert not isinstance(dense.text.encoder.net[0], BowLinear) and isinstance(bow.text.encoder.net[0], BowLinear)
    _, rec_dense = dense.text(x)
    _, rec_bow = bow.text(x.abs())
    assert (rec_dense < 0).any()  # a linear decoder, onto the features
    assert ((rec_bow > 0) & (rec_bow < 1)).all()  # a sigmoid decoder, onto the binarised BoW
    peer = build("jdsh", {**defaults("jdsh"), "txt_hidden": [8], "bits": 8}, 12, 10, "dense")
    assert not isinstance(peer.text.net[0], BowLinear) and peer.center_txt.enabled
    assert not build("jdsh", {**defaults("jdsh"), "txt_hidden": [8], "bits": 8}, 12, 10, "bow").center_txt.enabled


@pytest.mark.slow
def test_clip_text_embeddings_beside_the_bow_and_a_run_that_chooses_them(synth_dir, tmp_path):
    """Stage 1 adds text/<model>__<pretrained> for raw texts; a run picks it with --text; the
    search index hashes a free-text query through the same text tower."""
    from cfrh.encoders import load_encoder
    from cfrh_cache.readers import read_dataset as read
    from cfrh_search.index import Index
    from cfrh_search.queries import Queries
    report = features("synth", synth_dir, tmp_path / "c", chunk_rows=64, text_encoder=True)
    tag = report.encoder_tag
    assert f"text/{tag}" in report.written
    cache = Cache.open(tmp_path / "c" / "synth")
    texts = read("synth", synth_dir).texts
    direct = load_encoder("cfrh-tiny-vit", "none", "cpu", 0).encode_texts(texts[:5]).astype(np.float32)
    np.testing.assert_allclose(cache.read(f"text/{tag}")[:5].astype(np.float32), direct, atol=2e-3)
    assert cache.text_encoders() == [tag] and cache.text_kind(tag) == "dense" and cache.text_kind() == "bow"
    again = features("synth", synth_dir, tmp_path / "c", chunk_rows=64, text_encoder=True)
    assert again.written == []  # resumable and reused like the image features
    config = load("synth", overrides={"method": "cfrh", "bits": 16, "epochs": 2, "eval_every": 1, "hidden": 64,
                                      "device": "cpu", "text": tag})
    folder = exported_run(config, tmp_path / "c", "synth", tmp_path / "runs")
    from cfrh_train.results import read_result
    assert read_result(folder)["text"] == {"input": tag, "kind": "dense"}
    index = Index(folder / "index")
    code = Queries(index).hash(text=Queries(index).text_vectors(["red circle"]))[1]
    assert code.shape == (1, 16) and len(index.search(code, "image", 3)[0]) == 3


@pytest.mark.slow
def test_two_readme_commands_from_wiki_features_or_dgcpn_files_to_a_table(tmp_path):
    from cfrh_cli import app
    runner = CliRunner()
    wiki_features(tmp_path / "wiki")
    image, text, labels = topics(n=120)
    for name, value in (("flickr_vgg19.npy", image), ("tags.npy", text), ("label.npy", labels)):
        np.save(tmp_path / name, value)
    first = [["cache", "features", "wiki", "--root", str(tmp_path / "wiki")],
             ["cache", "import", "flickr", "--image", str(tmp_path / "flickr_vgg19.npy"), "--text",
              str(tmp_path / "tags.npy"), "--labels", str(tmp_path / "label.npy"), "--text-kind", "dense",
              "--encoder-name", "vgg19"]]
    for command in first:
        out = runner.invoke(app, [*command, "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
        assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["table", "--datasets", "wiki flickr", "--methods", "cfrh", "--bits", "16", "--seeds", "0",
                              "--cache-dir", str(tmp_path / "cache"), "--runs-dir", str(tmp_path / "runs"),
                              "--no-progress"])
    assert out.exit_code == 0, out.output
    md = (tmp_path / "runs" / "table.md").read_text()
    assert "### mAP@50 · wiki" in md and "### mAP@50 · flickr" in md
    assert "image features vgg19 (from flickr_vgg19.npy); text dataset (dense)" in md
    assert "image features sift-bovw__shipped (from raw_features.mat); text dataset (dense)" in md


def test_imported_features_beside_clip_features_in_one_cache(synth_cache, synth_dir, tmp_path):
    import shutil

    from cfrh_cli import app
    from cfrh_train.missing_runs import ensure_runs
    from cfrh_train.table import make_table
    cache_dir = tmp_path / "c"
    shutil.copytree(synth_cache, cache_dir / "synth")
    n = Cache.open(cache_dir / "synth").attrs["n"]
    vgg = np.random.default_rng(0).normal(size=(n, 48)).astype(np.float32)
    np.save(tmp_path / "vgg.npy", vgg)
    out = CliRunner().invoke(app, ["cache", "import", "synth", "--image", str(tmp_path / "vgg.npy"),
                                   "--encoder-name", "vgg19", "--cache-dir", str(cache_dir)])
    assert out.exit_code == 0, out.output
    cache = Cache.open(cache_dir / "synth")
    assert sorted(cache.encoders()) == ["cfrh-tiny-vit__none", "vgg19"]
    np.save(tmp_path / "short.npy", vgg[:10])
    out = CliRunner().invoke(app, ["cache", "import", "synth", "--image", str(tmp_path / "short.npy"),
                                   "--encoder-name", "v2", "--cache-dir", str(cache_dir)])
    assert out.exit_code == 1 and "short.npy: image features has 10 rows" in out.output
    counts = ensure_runs(["synth"], ["lsh"], [16], [0], cache_dir, tmp_path / "runs", "cpu", False, log=lambda m: None,
                         encoders=["cfrh-tiny-vit__none", "vgg19"])
    assert counts == {"trained": 2, "reused": 0}
    rows = [r.label for b in make_table(tmp_path / "runs")["blocks"] for r in b.rows if not r.published]
    assert "lsh [vgg19]" in rows and "lsh [cfrh-tiny-vit__none]" in rows
    again = features("synth", synth_dir, cache_dir, chunk_rows=64)  # stage 1 again: the import is not "stale"
    assert again.stats.skipped and "vgg19" in Cache.open(cache_dir / "synth").encoders()
