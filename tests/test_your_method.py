"""Your method in one file (issue #27): registered from a file or an entry point, it works
everywhere a built-in does, and what is wrong with it is one line naming the file."""

import json
import shutil
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cfrh.errors import ConfigError
from cfrh_cli import app
from cfrh_search.index import Index
from cfrh_search.queries import Queries
from cfrh_train import methods
from cfrh_train.config import load
from cfrh_train.methods import PLUGINS, register

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "my_method.py"
SOURCE = EXAMPLE.read_text()


@pytest.fixture(autouse=True)
def _fresh_registry():
    before = dict(PLUGINS)
    yield
    PLUGINS.clear()
    PLUGINS.update(before)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_a_method_from_one_file_trains_exports_searches_and_records_its_file(synth_cache, tmp_path):
    runs = tmp_path / "runs"
    out = invoke("train", "--method", f"{EXAMPLE}:PairedPCA", "--bits", 16, "--dataset", "synth", "--device", "cpu",
                 "--cache-dir", synth_cache.parent, "--runs-dir", runs, "--no-progress", "--export")
    assert out.exit_code == 0, out.output
    folder = runs / "synth" / "pairedpca" / "16bit" / "seed0"
    result = json.loads((folder / "result.json").read_text())
    import hashlib
    assert result["inputs"]["method_source"]["sha256"] == hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
    PLUGINS.clear()  # a new process: the index registers the method again from its record
    index = Index(folder)
    codes = np.load(folder / "codes.npz")
    rows = codes["database_index"][:5]
    got = Queries(index, "cpu").hash(image=index.rows_of(rows, "image"))[0]
    np.testing.assert_array_equal(np.where(got >= 0, 1, -1), codes["database_image"][:5])
    table = invoke("table", "--datasets", "synth", "--methods", f"lsh {EXAMPLE}:PairedPCA", "--bits", 16,
                   "--seeds", 0, "--device", "cpu", "--cache-dir", synth_cache.parent, "--runs-dir", runs,
                   "--no-progress")
    assert table.exit_code == 0, table.output
    assert "1 trained, 1 reused" in table.output and "| pairedpca (1 seed)" in (runs / "table.md").read_text()


def test_an_edited_method_file_is_a_new_run(synth_cache, tmp_path):
    copy = tmp_path / "mine.py"
    copy.write_text(SOURCE)
    from cfrh_train.missing_runs import ensure_runs
    kw = dict(cache_dir=synth_cache.parent, runs_dir=tmp_path / "runs", device="cpu", progress=False, log=lambda m: None)
    name = register(f"{copy}:PairedPCA")
    assert ensure_runs(["synth"], [name], [8], [0], **kw) == {"trained": 1, "reused": 0}
    assert ensure_runs(["synth"], [name], [8], [0], **kw) == {"trained": 0, "reused": 1}
    copy.write_text(SOURCE.replace('"balance": 0.1', '"balance": 0.2'))
    PLUGINS.clear()
    register(f"{copy}:PairedPCA")
    assert ensure_runs(["synth"], [name], [8], [0], **kw) == {"trained": 1, "reused": 0}


@pytest.mark.parametrize("edit,says", [
    (lambda s: s.replace("    def encode(", "    def encode_not("), "PairedPCA lacks encode of the Method interface"),
    (lambda s: s.replace('name = "pairedpca"', 'name = "cfrh"'), "method name 'cfrh' clashes with the built-in"),
    (lambda s: s.replace('"help": "weight of the bit-balance term"', '"hlp": "x"'), "key 'balance' needs a declaration"),
    (lambda s: s.replace('"pca_dims": 32,', '"pca_dims": 32, "widht": 3,'), "key 'widht' is not declared (in its keys"),
    (lambda s: s.replace('"pca_dims": {"type": "int"', '"lr": {"type": "int", "help": "x"}, "pca_dims": {"type": "int"'),
     "key 'lr' is declared already"),
    (lambda s: s + "\nraise RuntimeError('boom')\n", "could not be imported (RuntimeError: boom)"),
])
def test_what_is_wrong_with_a_method_file_is_one_line_naming_it(tmp_path, edit, says):
    bad = tmp_path / "bad.py"
    bad.write_text(edit(SOURCE))
    with pytest.raises(ConfigError, match=str(bad).replace(".", r"\.") + r".*" + says.replace("(", r"\(").replace(")", r"\)")):
        load("synth", overrides={"method": register(f"{bad}:PairedPCA")})
    out = invoke("train", "--method", f"{bad}:PairedPCA", "--cache-dir", tmp_path / "none")
    assert out.exit_code in (1, 2) and str(bad.name) in out.output


def test_two_files_cannot_take_one_name_and_an_unknown_method_lists_the_choices(tmp_path):
    register(f"{EXAMPLE}:PairedPCA")
    other = tmp_path / "other.py"
    other.write_text(SOURCE.replace('"balance": 0.1', '"balance": 0.3'))
    with pytest.raises(ConfigError, match=r"other\.py: method name 'pairedpca' is already taken by .*my_method\.py"):
        register(f"{other}:PairedPCA")
    with pytest.raises(ConfigError, match=r"unknown method 'nope'; choose one of cfrh, .*FILE\.py:Class"):
        load("synth", overrides={"method": "nope"})


def test_an_installed_method_joins_by_its_entry_point(tmp_path, monkeypatch, synth_cache):
    shutil.copy(EXAMPLE, tmp_path / "installed_method.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = [EntryPoint(name="pairedpca", value="installed_method:PairedPCA", group=methods.ENTRY_POINTS)]
    monkeypatch.setattr(methods, "entry_points", lambda group: found if group == methods.ENTRY_POINTS else [])
    assert "pairedpca" in methods.method_names()
    config = load("synth", overrides={"method": "pairedpca", "bits": 8, "device": "cpu", "epochs": 2})
    assert config["pca_dims"] == 32 and PLUGINS["pairedpca"].source == "installed_method:PairedPCA"
    sys.modules.pop("installed_method", None)


@pytest.mark.slow
def test_a_method_from_one_file_is_tuned_in_its_own_search_space(synth_cache, tmp_path):
    pytest.importorskip("optuna")
    out = invoke("tune", "--method", f"{EXAMPLE}:PairedPCA", "--dataset", "synth", "--bits", 8, "--trials", 3,
                 "--device", "cpu", "--cache-dir", synth_cache.parent, "--runs-dir", tmp_path / "runs")
    assert out.exit_code == 0, out.output
    best = json.loads((tmp_path / "runs" / "tune" / "synth" / "pairedpca" / "8bit" / "best.json").read_text())
    assert set(best) == {"_study", "method", "lr", "balance"} and best["method"] == "pairedpca"


def test_a_method_with_its_own_search_space_counts_as_tunable_for_the_table():
    from cfrh_train.tune import has_search_space
    name = register(f"{EXAMPLE}:PairedPCA")
    assert has_search_space(name) and has_search_space("cfrh") and not has_search_space("lsh")
