"""Trust at the seams (issue #26): where one artifact meets another (a run and its index, a study
and its killed trial, a table and the files behind its figures), nothing stale is served,
nothing half-written is read, no number is shown that the files cannot back; and bad input at
those seams is one line that names it."""

import json
import logging
import shutil
import socket

import numpy as np
import pytest
from conftest import exported_run
from typer.testing import CliRunner

from cfrh.errors import CacheError, ConfigError, DataError, TrainingError
from cfrh_cache.importer import Loaded, as_label_matrix, as_rows, import_source
from cfrh_cache.options import FeatureOptions
from cfrh_cache.pipeline import build_source
from cfrh_cache.splits import make_split
from cfrh_cli import app
from cfrh_search import index as index_module
from cfrh_search.index import Index, export_index
from cfrh_search.queries import Queries
from cfrh_train.config import load
from cfrh_train.missing_runs import ensure_runs
from cfrh_train.table import make_table
from cfrh_train.train import run, run_lock

LSH = {"method": "lsh", "bits": 16, "device": "cpu"}
CFRH_SMALL = {"method": "cfrh", "bits": 16, "device": "cpu", "epochs": 3, "eval_every": 1, "hidden": 32}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


# -- a run and its index -------------------------------------------------------------------------
def test_a_retrained_run_refuses_its_old_index_until_exported_again(synth_cache, tmp_path):
    runs, cache_dir = tmp_path / "runs", synth_cache.parent
    folder = exported_run(load("synth", overrides=CFRH_SMALL), cache_dir, "synth", runs)
    run(load("synth", overrides={**CFRH_SMALL, "epochs": 4}), cache_dir, "synth", runs, progress=False)
    with pytest.raises(CacheError, match=r"exported from an earlier training .* export it again: cfrh export"):
        Index(folder)
    out = invoke("search", folder, "--row", 3, "--device", "cpu")
    assert out.exit_code == 1 and "cfrh export" in out.output
    assert invoke("export", folder, "--cache-dir", cache_dir).exit_code == 0
    index = Index(folder)
    assert index.meta["model"]["config"]["epochs"] == 4
    assert len(index.search(Queries(index).hash(image=index.rows_of([3], "image"))[0], "text", 5)[0]) == 5


def test_an_export_killed_before_it_finishes_leaves_the_old_index(synth_cache, tmp_path, monkeypatch):
    folder = exported_run(load("synth", overrides=LSH), synth_cache.parent, "synth", tmp_path / "runs")
    before = (folder / "index" / "codes.npz").read_bytes(), (folder / "index" / "index.json").read_text()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as a kill just before index.json is written
    monkeypatch.setattr(index_module, "atomic_write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        export_index(folder, synth_cache.parent, index_module.IndexSpec("exact", None, 2))
    assert ((folder / "index" / "codes.npz").read_bytes(), (folder / "index" / "index.json").read_text()) == before
    assert sorted(p.name for p in (folder / "index").iterdir()) == ["codes.npz", "index.json", "model.safetensors"]
    monkeypatch.undo()
    export_index(folder, synth_cache.parent, index_module.IndexSpec("exact", None, 2))  # the next export cleans up
    assert len(Index(folder).meta["ann"]["shards"]) == 2
    assert not any(p.name.startswith(".index") for p in folder.iterdir())


# -- a study and its killed trial ----------------------------------------------------------------
@pytest.mark.slow
def test_a_study_killed_in_its_default_trial_resumes_to_the_uninterrupted_result(synth_cache, tmp_path):
    optuna = pytest.importorskip("optuna")
    from cfrh_train.tune import _storage, study_dir, tune
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"lr_img": {"type": "float", "low": 0.001, "high": 0.05, "log": True},
                                 "beta": {"type": "float", "low": 0.0, "high": 1.0}}))
    kw = dict(cache_dir=synth_cache.parent, seed=0, space_file=space)
    whole = tune("synth", "cfrh", 8, 4, runs_dir=tmp_path / "a", **kw)
    folder = study_dir(tmp_path / "b", "synth", "cfrh", 8)
    folder.mkdir(parents=True)
    study = optuna.create_study(study_name="synth-cfrh-8bit-seed0", direction="maximize",
                                storage=_storage(f"sqlite:///{(folder / 'study.db').resolve()}"))
    study.enqueue_trial({}, user_attrs={"default": True})
    assert study.ask().user_attrs["default"]  # trial 0 left RUNNING, as by a kill -9 a second ago
    resumed = tune("synth", "cfrh", 8, 4, runs_dir=tmp_path / "b", **kw)
    assert resumed["trials"] == whole["trials"] == 4
    for key in ("default_val_map", "best_val_map", "best_params", "test_metrics"):
        assert resumed[key] == whole[key], key
    states = [t.state for t in optuna.load_study(study_name="synth-cfrh-8bit-seed0",
                                                 storage=f"sqlite:///{folder / 'study.db'}").trials]
    assert states[0] == optuna.trial.TrialState.FAIL and optuna.trial.TrialState.RUNNING not in states
    best = json.loads((folder / "best.json").read_text())
    assert best["_study"] == {"dataset": "synth", "method": "cfrh", "bits": 8, "seed": 0, "trials": 4}


def test_a_best_json_is_used_only_for_its_method(tmp_path, caplog):
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"_study": {"dataset": "mirflickr", "method": "cfrh", "bits": 32, "seed": 0,
                                           "trials": 30}, "method": "cfrh", "phi": 0.3}))
    with pytest.raises(ConfigError, match="tuned for method 'cfrh', not 'jdsh'"):
        load("synth", best, {"method": "jdsh", "bits": 32})
    with caplog.at_level(logging.WARNING, logger="cfrh_train.config"):
        config = load("synth", best, {"bits": 16})
    assert config["phi"] == 0.3 and "_study" not in config
    assert "tuned on dataset mirflickr" in caplog.text and "tuned on bits 32" in caplog.text


@pytest.mark.parametrize("text,says", [('{"phi": NaN}', "NaN is not a number"),
                                       ('{"phi": 1e400}', "1e400 overflows to infinity"),
                                       ('{"phi": 0.1, "phi": 0.2}', "key 'phi' is given twice")])
def test_a_config_file_refuses_nan_overflow_and_repeated_keys(tmp_path, text, says):
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"{path}: {says}"):
        load("synth", path)


# -- a table and the files behind its figures ----------------------------------------------------
def test_the_table_shows_only_what_per_query_files_back(synth_cache, tmp_path):
    runs = tmp_path / "runs"
    ensure_runs(["synth"], ["lsh"], [16], [0], synth_cache.parent, runs, "cpu", False, log=lambda m: None)
    path = runs / "synth" / "lsh" / "16bit" / "seed0" / "result.json"
    result = json.loads(path.read_text())
    true = result["metrics"]["i2t"]["map@50"]
    result["metrics"]["i2t"]["map@50"] = 0.9876
    path.write_text(json.dumps(result))
    with pytest.raises(DataError, match=rf"result.json: metrics.i2t.map@50 = 0.9876, but its per_query.npz gives "
                                        rf"{true!r}"):
        make_table(runs, figures=False)
    result["metrics"]["i2t"]["map@50"] = "0.9876"
    path.write_text(json.dumps(result))
    out = invoke("table", "--no-train", "--runs-dir", runs)
    assert out.exit_code == 1 and "metrics.i2t.map@50 is '0.9876', not a number" in out.output


def test_runs_of_an_older_cfrh_are_marked_in_the_table(synth_cache, tmp_path):
    runs = tmp_path / "runs"
    ensure_runs(["synth"], ["lsh"], [16], [0, 1], synth_cache.parent, runs, "cpu", False, log=lambda m: None)
    path = runs / "synth" / "lsh" / "16bit" / "seed1" / "result.json"
    result = json.loads(path.read_text())
    result["versions"]["cfrh"] = "0.2.0"
    path.write_text(json.dumps(result))
    labels = {r.label for b in make_table(runs, figures=False)["blocks"] for r in b.rows if not r.published}
    assert labels == {"lsh", "lsh (cfrh 0.2.0)"}


def test_the_table_command_honours_its_filters_and_refuses_bad_options(synth_cache, tmp_path):
    runs = tmp_path / "runs"
    ensure_runs(["synth"], ["lsh", "random"], [8, 16], [0], synth_cache.parent, runs, "cpu", False, log=lambda m: None)
    out = invoke("table", "--no-train", "--runs-dir", runs, "--methods", "lsh", "--bits", "16")
    assert out.exit_code == 0, out.output
    md = (runs / "table.md").read_text()
    assert "| lsh (1 seed)" in md and "| random" not in md and "I→T 16" in md and "I→T 8 " not in md
    typo = invoke("table", "--no-train", "--runs-dir", runs, "--datasets", "synht")
    assert typo.exit_code == 1 and "--datasets synht: no finished run has it (the runs have: synth)" in typo.output
    assert invoke("table", "--no-train", "--runs-dir", runs, "--rerank", "-3").exit_code == 2
    for published, says in ((tmp_path / "nope.csv", "no such file"), (tmp_path, "a folder")):
        out = invoke("table", "--no-train", "--runs-dir", runs, "--published", published)
        assert out.exit_code == 1 and says in out.output and "--published expects" in out.output


# -- the served page and the search command ------------------------------------------------------
def test_every_page_escapes_what_an_index_names(synth_cache, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from cfrh_search.serve import load as load_app
    folder = exported_run(load("synth", overrides=LSH), synth_cache.parent, "synth", tmp_path / "runs")
    meta_path = folder / "index" / "index.json"
    hostile = "<img src=x onerror=alert(1)>"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "dataset": hostile}))
    client = TestClient(load_app(folder, "cpu"))
    home = client.get("/").text
    word = Index(folder).meta["vocabulary"][0]
    hits = client.get("/search", params={"text": word, "k": 3}).text
    for page in (home, hits):
        assert hostile not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
        assert "<form id='text-form'" in page  # a search box on every page
    assert client.post("/api/search", files={"image": ("x.png", b"not an image")}, data={"k": "0"}).status_code == 422
    bad = client.post("/api/search", files={"image": ("holiday.jpg", b"not an image")}, data={"k": "3"})
    assert bad.status_code == 400 and "holiday.jpg" in bad.json()["detail"] and "/tmp" not in bad.json()["detail"]
    page = tmp_path / "hits.html"
    assert invoke("search", folder, "--row", 2, "--html", page, "--device", "cpu").exit_code == 0
    assert hostile not in page.read_text()


def test_search_and_serve_options_are_checked_before_any_work(synth_cache, tmp_path):
    folder = exported_run(load("synth", overrides=LSH), synth_cache.parent, "synth", tmp_path / "runs")
    folder_page = invoke("search", folder, "--row", 1, "--html", tmp_path)
    assert folder_page.exit_code == 1 and "a folder; give the page's file name" in folder_page.output
    gpu = invoke("search", folder, "--row", 1, "--device", "gpu")
    assert gpu.exit_code == 2 and "expected auto, cpu, cuda, cuda:N or mps" in gpu.output
    pytest.importorskip("uvicorn")
    pytest.importorskip("fastapi")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = invoke("serve", folder, "--port", port, "--device", "cpu")
    assert out.exit_code == 1 and f"--port {port}" in out.output and "in use" in out.output


# -- training: the usage line, and two at once ---------------------------------------------------
def test_train_without_dataset_takes_the_one_cached_or_asks(synth_cache, tmp_path):
    one = tmp_path / "one"
    shutil.copytree(synth_cache, one / "synth")
    out = invoke("train", "--bits", 8, "--method", "lsh", "--device", "cpu", "--cache-dir", one,
                 "--runs-dir", tmp_path / "runs", "--no-progress")
    assert out.exit_code == 0, out.output
    assert "dataset: synth (the only one in" in out.output and (tmp_path / "runs" / "synth" / "lsh").is_dir()
    shutil.copytree(synth_cache, one / "other")
    two = invoke("train", "--bits", 8, "--method", "lsh", "--cache-dir", one, "--runs-dir", tmp_path / "runs")
    assert two.exit_code == 1 and "holds several datasets (other, synth); name one" in two.output
    none = invoke("train", "--bits", 8, "--cache-dir", tmp_path / "empty")
    assert none.exit_code == 1 and "no cached dataset" in none.output


def test_a_second_training_of_the_same_run_is_refused_while_the_first_runs(synth_cache, tmp_path):
    config = load("synth", overrides=LSH)
    folder = tmp_path / "runs" / "synth" / "lsh" / "16bit" / "seed0"
    with run_lock(folder):  # as another process training it now
        with pytest.raises(TrainingError, match="another process is training this run now"):
            run(config, synth_cache.parent, "synth", tmp_path / "runs", progress=False)
    assert run(config, synth_cache.parent, "synth", tmp_path / "runs", progress=False) == folder


# -- degenerate input at import ------------------------------------------------------------------
def write_import(tmp_path, image, labels, name="imp"):
    rng = np.random.default_rng(0)
    n = image.shape[0]
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "text.npy", (rng.random((n, 20)) < 0.3).astype(np.float32))
    np.save(tmp_path / "labels.npy", labels)
    source = import_source(name, str(tmp_path / "image.npy"), str(tmp_path / "text.npy"), str(tmp_path / "labels.npy"))
    return build_source(source, name, tmp_path, tmp_path / "cache", FeatureOptions(progress=False))


def test_features_without_variance_are_refused_and_many_duplicates_are_said(tmp_path):
    labels = np.eye(4, dtype=np.uint8)[np.arange(200) % 4]
    for image, kind in ((np.zeros((200, 8), np.float32), "all zero"), (np.ones((200, 8), np.float32), "every row")):
        with pytest.raises(DataError, match=rf"image.npy: image features have no variance \({kind}"):
            write_import(tmp_path, image, labels)
    assert not (tmp_path / "cache" / "imp").exists()
    image = np.random.default_rng(1).normal(size=(200, 8)).astype(np.float32)
    image[:60] = 0
    report = write_import(tmp_path, image, labels)
    assert any("60 of 200 image features rows (30%) are all-zero" in note for note in report.notes)


def test_class_numbers_are_renumbered_and_split_in_time_that_grows_with_rows(tmp_path):
    classes = np.array([3, 1_440_764, 3, 17] * 50, np.int64)
    notes = []
    onehot = as_label_matrix(Loaded(classes, tmp_path / "l.npy", "", []), 200, notes)
    assert onehot.shape == (200, 3) and (onehot.argmax(1) == np.searchsorted([3, 17, 1_440_764], classes)).all()
    assert "class numbers 3..1440764 renumbered to the 3 classes present" in notes[0]
    split = make_split(onehot, "imported", "djsrh", 0)  # 3 columns: instant
    assert split.query.size > 0 and np.intersect1d(split.query, split.database).size == 0
    nan = np.array([0, 1, np.nan, 2] * 5)
    with pytest.raises(DataError, match=r"l.npy: a class-number vector has NaN in rows \[2, 6, 10"):
        as_label_matrix(Loaded(nan, tmp_path / "l.npy", "", []), 20)


def test_an_int64_mask_is_read_as_a_mask_and_complex_features_are_refused(tmp_path):
    mask = np.zeros(50, np.int64)
    mask[[3, 7, 9]] = 1
    assert as_rows(Loaded(mask, tmp_path / "q.npy", "", []), 50).tolist() == [3, 7, 9]
    with pytest.raises(DataError, match="image features hold complex numbers"):
        write_import(tmp_path, np.ones((40, 4), np.complex64) * (1 + np.arange(40))[:, None],
                     np.eye(4, dtype=np.uint8)[np.arange(40) % 4])


@pytest.mark.parametrize("name", ["../x", "/abs/path", "", ".hidden", "a/b"])
def test_a_cache_name_that_is_not_a_plain_name_is_refused(tmp_path, name):
    out = invoke("cache", "import", name, "--image", tmp_path / "i.npy", "--text", tmp_path / "t.npy",
                 "--labels", tmp_path / "l.npy", "--cache-dir", tmp_path / "cache")
    assert out.exit_code == 1 and f"dataset name {name!r}: expected a plain name" in out.output
    assert not (tmp_path / "cache").exists() and not (tmp_path / "x").exists()


def test_parquet_with_several_vector_columns_asks_which_and_names_a_bad_row(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from cfrh_cache.importer import load_array
    rows = [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]
    pq.write_table(pa.table({"id": [1, 2, 3], "img": rows, "txt": rows}), tmp_path / "two.parquet")
    with pytest.raises(DataError, match=r"two.parquet: several vector columns \(candidates: img, txt\); name the "
                                        r"column as two.parquet:COLUMN"):
        load_array(str(tmp_path / "two.parquet"))
    assert load_array(str(tmp_path / "two.parquet:img")).values.shape == (3, 2)
    pq.write_table(pa.table({"id": [1, 2, 3], "img": rows}), tmp_path / "one.parquet")
    assert load_array(str(tmp_path / "one.parquet")).values.shape == (3, 2)  # the one vector column, not the id
    for bad, says in (([[0.1, 0.2], None, [0.5, 0.6]], "row 1 is null"), ([[0.1, 0.2], [0.3], [0.5, 0.6]],
                                                                          "row 1 has 1 values, row 0 has 2")):
        pq.write_table(pa.table({"img": bad}), tmp_path / "bad.parquet")
        with pytest.raises(DataError, match=f"bad.parquet:img: {says}"):
            load_array(str(tmp_path / "bad.parquet:img"))


def test_after_training_a_method_that_could_not_run_has_no_row_and_no_error(synth_cache, tmp_path):
    out = invoke("table", "--datasets", "synth", "--methods", "lsh ucmfh", "--bits", 8, "--seeds", 0, "--device", "cpu",
                 "--cache-dir", synth_cache.parent, "--runs-dir", tmp_path / "runs", "--no-progress")
    assert out.exit_code == 0, out.output
    assert "no ucmfh rows for synth" in out.output  # the demo cache has no text embeddings: said, not fatal
    md = (tmp_path / "runs" / "table.md").read_text()
    assert "| lsh (1 seed)" in md and "ucmfh" not in md
