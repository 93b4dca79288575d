"""The shallow baselines every table carries (issue #28): CVH, IMH, CMFH, LSSH, written from
their papers, each checked on a case whose answer is known, and run through the same loop,
run folder, table, tuning and search as every method."""

import json

import numpy as np
import pytest
import scipy.linalg
import torch
from conftest import exported_run
from typer.testing import CliRunner

from cfrh_cli import app
from cfrh_search.index import Index
from cfrh_search.queries import Queries
from cfrh_train.config import defaults, load
from cfrh_train.methods import build
from cfrh_train.methods.cmfh import cmfh_fit
from cfrh_train.methods.cvh import cvh_projections
from cfrh_train.methods.lssh import lasso
from cfrh_train.table import make_table
from cfrh_train.train import run, train

SHALLOW = ("cvh", "imh", "cmfh", "lssh")


def two_views(n=1200, latent=8, seed=0):
    """Two views generated from one low-rank latent (the second a non-negative, BoW-like one)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, latent))
    x1 = z @ rng.normal(size=(latent, 48)) + 0.3 * rng.normal(size=(n, 48))
    x2 = np.maximum(z @ rng.normal(size=(latent, 80)) + 0.3 * rng.normal(size=(n, 80)), 0)
    return torch.tensor(x1, dtype=torch.float32), torch.tensor(x2, dtype=torch.float32)


@pytest.mark.parametrize("name", SHALLOW)
def test_codes_of_the_two_views_agree_far_above_chance(name):
    x1, x2 = two_views()
    config = {**defaults(name), "bits": 16, "seed": 0}
    method = build(name, config, 48, 80)
    method.fit(x1[:1000], x2[:1000])
    ci, ct = method.encode(x1[1000:], x2[1000:])  # items the fit never saw
    agree = float(((ci >= 0) == (ct >= 0)).float().mean())
    assert agree > 0.7, agree  # chance: 0.5
    assert 0.3 < float((ci >= 0).float().mean()) < 0.7  # balanced bits, not one constant code


def test_cvh_solves_its_generalized_eigenproblem_as_a_direct_cca_does():
    x1, x2 = (x.double().numpy() for x in two_views(n=600))
    x1, x2 = x1 - x1.mean(0), x2 - x2.mean(0)
    ridge, k = 1e-3, 6
    a, b, values = cvh_projections(x1, x2, k, ridge)
    n = x1.shape[0]
    c11, c22 = x1.T @ x1 / n + ridge * np.eye(48), x2.T @ x2 / n + ridge * np.eye(80)
    w1, w2 = (np.linalg.inv(scipy.linalg.sqrtm(c)).real for c in (c11, c22))
    u, s, vt = np.linalg.svd(w1 @ (x1.T @ x2 / n) @ w2)  # CCA by whitening and an SVD: an independent solve
    np.testing.assert_allclose(values, s[:k], rtol=1e-6)  # the eigenvalues are the canonical correlations
    for j in range(k):  # each projection, up to sign and scale, is the canonical direction
        direct = w1 @ u[:, j]
        cos = abs(a[:, j] @ direct) / (np.linalg.norm(a[:, j]) * np.linalg.norm(direct))
        assert cos > 1 - 1e-6, (j, cos)
    np.testing.assert_allclose(a.T @ c11 @ a + b.T @ c22 @ b, np.eye(k), atol=1e-8)  # eigh's normalisation


def test_cmfh_objective_decreases_at_every_update():
    x1, x2 = (x.double().numpy() for x in two_views(n=400))
    x1, x2 = x1 - x1.mean(0), x2 - x2.mean(0)
    trace: list[float] = []
    cmfh_fit(x1, x2, 12, 0.5, 10.0, 1e-2, 8, np.random.default_rng(0), trace)
    after_first_round = trace[3:]  # from the first V update on, every term is defined
    assert len(after_first_round) > 20
    assert all(b <= a * (1 + 1e-9) for a, b in zip(after_first_round, after_first_round[1:])), after_first_round


def test_lasso_by_fista_matches_the_optimality_conditions():
    rng = np.random.default_rng(1)
    d = rng.normal(size=(30, 12))
    target = rng.normal(size=(5, 30))
    s = lasso(target, d, 2.0, 2000)
    grad = 2 * (s @ d.T @ d - target @ d)  # KKT: |grad| ≤ λ where s = 0, grad = −λ·sign(s) elsewhere
    zero = s == 0
    assert np.all(np.abs(grad[zero]) <= 2.0 + 1e-6)
    np.testing.assert_allclose(grad[~zero], -2.0 * np.sign(s[~zero]), atol=1e-5)


@pytest.mark.parametrize("name", ["cmfh", "lssh"])
def test_unified_database_codes_are_one_code_from_both_modalities(name):
    x1, x2 = two_views()
    config = {**defaults(name), "bits": 16, "seed": 0}
    method = build(name, config, 48, 80)
    method.fit(x1, x2)
    assert [torch.equal(a, b) for a, b in zip(method.encode_database(x1, x2), method.encode(x1, x2))] == [True, True]
    config["database_codes"] = "unified"
    di, dt = method.encode_database(x1, x2)
    assert torch.equal(di, dt) and not torch.equal(di >= 0, method.encode(x1, None)[0] >= 0)


@pytest.mark.parametrize("name", SHALLOW)
def test_a_shallow_run_is_deterministic_and_beats_lsh_on_the_demo_cache(name, synth_cache):
    config = load("synth", overrides={"method": name, "bits": 16, "device": "cpu"})
    first = train(config, synth_cache.parent, "synth", progress=False)
    again = train(config, synth_cache.parent, "synth", progress=False)
    np.testing.assert_array_equal(first["codes"]["database_image"], again["codes"]["database_image"])
    assert first["result"]["selection"]["val_map"] is not None  # scored once on validation (what tuning reads)
    lsh = train(load("synth", overrides={"method": "lsh", "bits": 16, "device": "cpu"}), synth_cache.parent, "synth",
                progress=False)
    ours = np.mean([first["result"]["metrics"][d]["map@50"] for d in ("i2t", "t2i")])
    floor = np.mean([lsh["result"]["metrics"][d]["map@50"] for d in ("i2t", "t2i")])
    assert ours > floor, (ours, floor)


def test_a_shallow_run_exports_searches_and_its_unified_rows_are_marked(synth_cache, tmp_path):
    runs = tmp_path / "runs"
    config = load("synth", overrides={"method": "lssh", "bits": 16, "device": "cpu"})
    folder = exported_run(config, synth_cache.parent, "synth", runs)
    codes = np.load(folder / "codes.npz")
    index = Index(folder)
    positions = [0, 5, 9]
    rows = codes["database_index"][positions]
    got = Queries(index).hash(image=index.rows_of(rows, "image"))[0]  # the image side's sparse coding, re-run
    np.testing.assert_array_equal(np.where(got >= 0, 1, -1), codes["database_image"][positions])
    run(load("synth", overrides={"method": "cmfh", "bits": 16, "device": "cpu", "database_codes": "unified"}),
        synth_cache.parent, "synth", runs, progress=False)
    md = make_table(runs, figures=False)["markdown"].read_text()
    assert "| cmfh (unified database codes) (1 seed)" in md and "| lssh (1 seed)" in md
    assert "are not comparable with the others" in md
    assert "| CMFH · published · shallow features" not in md  # the synth cache has no published rows
    out = CliRunner().invoke(app, ["train", "--method", "cvh", "--bits", "8", "--device", "cpu", "--dataset", "synth",
                                   "--cache-dir", str(synth_cache.parent), "--runs-dir", str(runs), "--no-progress"])
    assert out.exit_code == 0, out.output
    assert json.loads((runs / "synth" / "cvh" / "8bit" / "seed0" / "result.json").read_text())["method"] == "cvh"


@pytest.mark.slow
def test_a_shallow_method_is_tuned_on_validation(synth_cache, tmp_path):
    pytest.importorskip("optuna")
    from cfrh_train.tune import tune
    summary = tune("synth", "cmfh", 16, 4, synth_cache.parent, tmp_path / "runs", seed=0)
    assert summary["trials"] == 4 and summary["default_val_map"] is not None
    assert summary["best_val_map"] >= summary["default_val_map"]
