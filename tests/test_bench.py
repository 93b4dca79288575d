"""The benchmark's script runs (its sets at toy sizes), and what it measures against is right."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cfrh_train.methods import TABLE_METHODS
from cfrh_train.metrics import evaluate

BENCH = Path(__file__).parents[1] / "bench"


def bench_module(name: str):
    sys.path.insert(0, str(BENCH))  # the bench's modules import each other by plain name
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def bench(tmp_path, *args, timeout=600):
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, str(BENCH / "run.py"), "--out", str(out), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=BENCH.parent)
    return done, (json.loads(out.read_text()) if out.is_file() else None)


@pytest.mark.parametrize("bits", [4, 32])
def test_device_map_at_k_equals_our_kernel(bits):
    """The GPU-style ranking (matrix product, top-k on distance·n + index) gives our mAP@50,
    ties included (4 bits: thousands of items share each distance)."""
    baselines = bench_module("baselines")
    rng = np.random.default_rng(bits)
    q = np.where(rng.random((40, bits)) < 0.5, -1, 1).astype(np.int8)
    db = np.where(rng.random((3000, bits)) < 0.5, -1, 1).astype(np.int8)
    ql, dl = (rng.random((40, 5)) < 0.3).astype(np.uint8), (rng.random((3000, 5)) < 0.3).astype(np.uint8)
    ours = evaluate(q, db, ql, dl, full=False)["map@50"]
    assert baselines.torch_map_at_k(q, db, ql, dl, 50, "cpu", block=16) == pytest.approx(ours, abs=1e-12)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the GPU set would run")
def test_gpu_set_without_a_gpu_says_to_dry_run(tmp_path):
    done, _ = bench(tmp_path, "--set", "gpu", timeout=120)
    assert done.returncode == 2 and "sees none here" in done.stderr and "--dry-run" in done.stderr


@pytest.mark.slow
def test_gpu_set_dry_run_measures_every_section(tmp_path):
    done, results = bench(tmp_path, "--set", "gpu", "--dry-run")
    assert done.returncode == 0, done.stderr[-3000:]
    assert results["set"] == "gpu" and results["sizes"] == "toy" and results["machine"]["device_name"]
    assert [r["images_from"] for r in results["stage1"]] == ["JPEG files", "IAll array (HDF5, uncompressed)"]
    for r in results["stage1"]:
        assert r["pipeline_img_s"] > 0 and r["bare_forward_img_s"] > 0 and sum(r["share"].values()) <= 1.0
    *runs, summary = results["stage2"]
    assert sorted(r["method"] for r in runs) == sorted(TABLE_METHODS) and all(r["measured"] for r in runs)
    assert all(r["whole_run_s"] > 0 and (r["epoch_s"] is not None) == r["trainable"] for r in runs)
    assert all(r["predicted_whole_run_s"] > 0 for r in runs if r["trainable"])
    assert summary["table_runs"] == 12 * len(TABLE_METHODS)
    assert summary["table_minutes"] == pytest.approx(12 * sum(r["whole_run_s"] for r in runs) / 60, abs=0.1)
    assert all(r["agree"] for r in results["eval"]) and results["search"][0]["ours_queries_per_s"] > 0
    assert set(results["section_s"]) == {"stage1", "stage2", "eval", "search"}


@pytest.mark.slow
def test_whole_runs_past_the_budget_are_predicted_not_run(tmp_path):
    done, results = bench(tmp_path, "--set", "gpu", "--dry-run", "--only", "stage2", "--budget-s", "0")
    assert done.returncode == 0, done.stderr[-3000:]
    *runs, summary = results["stage2"]
    for r in runs:  # the fitted-once methods have no prediction: they always run
        assert r["measured"] != r["trainable"] and ("map50" in r) == r["measured"]
        assert not r["trainable"] or (r["whole_run_s"] == r["predicted_whole_run_s"] and r["epochs"] == 2)
    assert sorted(summary["predicted_not_run"]) == sorted(r["method"] for r in runs if r["trainable"])


@pytest.mark.slow
def test_quick_cpu_set_runs_every_section(tmp_path):
    done, results = bench(tmp_path, "--quick")
    assert done.returncode == 0, done.stderr[-3000:]
    assert set(results["section_s"]) == {"eval", "search", "ann", "tune", "trainer", "stage2", "shallow", "stage1"}
    assert results["tune"]["trials"] == 2 and results["search"][0]["ours_queries_per_s"] > 0
    assert results["sizes"] == "toy"
