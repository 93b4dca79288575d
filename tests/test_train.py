import json

import numpy as np
import pytest
import torch
from conftest import interrupt_after_checkpoints

from cfrh.errors import ConfigError
from cfrh_train.affinity import cosine, fused, joint
from cfrh_train.config import load, merge
from cfrh_train.losses import cfrh_loss
from cfrh_train.metrics import evaluate
from cfrh_train.train import train, write_run


def test_config_rejects_unknown_keys_and_wrong_types(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'phii'"):
        load("synth", overrides={"phii": 0.1})
    with pytest.raises(ConfigError, match="'epochs' must be int, got str"):
        load("synth", overrides={"epochs": "ten"})
    bad = tmp_path / "c.json"
    bad.write_text(json.dumps({"bits": True}))
    with pytest.raises(ConfigError, match=r"c\.json: 'bits' must be int"):
        load("synth", bad)
    assert merge({"lr": 0.1}, {"lr": 1}, "x")["lr"] == 1.0  # ints are fine where floats are expected


def test_affinity_against_loops():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 7)), rng.random((5, 9))
    cos = lambda x: np.array([[x[i] @ x[j] / np.linalg.norm(x[i]) / np.linalg.norm(x[j]) for j in range(5)] for i in range(5)])
    s_i, s_t = cos(a), cos(b)
    rows = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)
    s_it = rows(s_i) @ rows(s_t).T
    expected = 1.4 * (0.5 * s_i + 0.2 * s_t + 0.3 * s_it)
    got = fused(torch.tensor(a), torch.tensor(b), 0.5, 0.2, 0.3, 1.4).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-10)
    np.testing.assert_allclose(cosine(torch.tensor(a), "2cos-1").numpy(), 2 * s_i - 1, atol=1e-10)
    np.testing.assert_allclose(joint(torch.tensor(s_i), torch.tensor(s_t), "elementwise").numpy(), s_i * s_t)


def test_loss_against_loops():
    rng = np.random.default_rng(1)
    ci, ct = rng.uniform(-1, 1, (4, 6)), rng.uniform(-1, 1, (4, 6))
    s = rng.uniform(-1, 1.4, (4, 4))
    ri, ti, rt, tt = (rng.random((4, 3)) for _ in range(4))
    n = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    mse = lambda x, y: np.mean((x - y) ** 2)
    intra = mse(n(ci) @ n(ci).T, s) + mse(n(ct) @ n(ct).T, s)
    cross = mse(n(ci) @ n(ct).T, s) + mse(n(ct) @ n(ci).T, s) - np.mean([n(ci)[i] @ n(ct)[i] for i in range(4)])
    ae = mse(ri, ti) + mse(rt, tt)
    quant = mse(ci, np.where(ci >= 0, 1, -1)) + mse(ct, np.where(ct >= 0, 1, -1))
    t = lambda x: torch.tensor(x)
    got = cfrh_loss(t(ci), t(ct), t(s), t(ri), t(ti), t(rt), t(tt), delta=0.1, phi=0.3, lam=0.05)
    assert got["loss"].item() == pytest.approx(0.1 * intra + cross + 0.3 * ae + 0.05 * quant)


FAST = {"epochs": 6, "eval_every": 2, "hidden": 256, "device": "cpu"}


@pytest.fixture(scope="module")
def run(synth_cache):
    config = load("synth", overrides={**FAST, "bits": 16})
    return train(config, synth_cache.parent, "synth", progress=False)


def test_run_folder_contract(run, tmp_path):
    folder = write_run(run, tmp_path)
    assert folder == tmp_path / "synth" / "cfrh" / "16bit" / "seed0"
    result = json.loads((folder / "result.json").read_text())
    for key in ("method", "dataset", "bits", "seed", "encoder", "protocol", "config", "selection", "metrics",
                "timing", "versions"):
        assert key in result
    assert set(result["protocol"]) >= {"name", "seed", "n_query", "n_database", "n_train", "n_val"}
    assert result["selection"]["on"] == "val" and result["selection"]["epoch"] in (1, 3, 5)
    for d in ("i2t", "t2i"):
        assert set(result["metrics"][d]) >= {"map@50", "map@all", "map@50_tie_avg", "p@k"}
    assert set(result["versions"]) >= {"python", "torch", "open_clip", "numpy", "zarr"}
    assert result["encoder"]["pretrained"] == "none" and "warning" in result["encoder"]
    codes = np.load(folder / "codes.npz")
    assert codes["query_image"].dtype == np.int8 and set(np.unique(codes["query_image"])) <= {-1, 1}
    assert codes["query_image"].shape == (result["protocol"]["n_query"], 16)
    assert (folder / "pr_curve.png").stat().st_size > 1000
    assert len(json.loads((folder / "pr_curve.json").read_text())["i2t"]["precision"]) == 17


def test_stored_codes_reproduce_the_metrics(run, synth_cache):
    from cfrh_cache.store import Cache
    labels = Cache.open(synth_cache).read("labels")
    c = run["codes"]
    again = evaluate(c["query_image"], c["database_text"], labels[c["query_index"]], labels[c["database_index"]])
    assert again["map@50"] == run["result"]["metrics"]["i2t"]["map@50"]


def test_same_seed_same_result(run, synth_cache):
    again = train(load("synth", overrides={**FAST, "bits": 16}), synth_cache.parent, "synth", progress=False)
    assert again["result"]["metrics"] == run["result"]["metrics"]
    np.testing.assert_array_equal(again["codes"]["database_text"], run["codes"]["database_text"])


@pytest.mark.slow
def test_cfrh_beats_random_and_lsh(quality_cache):
    scores = {}
    for method in ("cfrh", "lsh", "random"):
        out = train(load("synth", overrides={"method": method, "bits": 32, "device": "cpu"}), quality_cache, "synth",
                    progress=False)
        scores[method] = out["result"]["metrics"]
    for d in ("i2t", "t2i"):
        floor = max(scores["lsh"][d]["map@50"], scores["random"][d]["map@50"])
        assert scores["cfrh"][d]["map@50"] > floor + 0.03, (d, scores)


def test_nan_features_are_refused(synth_cache, tmp_path):
    import shutil

    from cfrh.errors import CacheError
    from cfrh_cache.store import Cache
    copy = tmp_path / "synth"
    shutil.copytree(synth_cache, copy)
    cache = Cache.open(copy, mode="a")
    cache.group["image/cfrh-tiny-vit__none"][3, 0] = np.nan
    with pytest.raises(CacheError, match=r"NaN/Inf in rows \[3\]"):
        train(load("synth", overrides=FAST), tmp_path, "synth", progress=False)


def test_interrupted_training_resumes_to_the_same_result(run, synth_cache, tmp_path, monkeypatch):
    config = load("synth", overrides={**FAST, "bits": 16})
    ckpt = tmp_path / "checkpoint.pt"
    with monkeypatch.context() as patch:
        interrupt_after_checkpoints(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            train(config, synth_cache.parent, "synth", progress=False, checkpoint=ckpt)
    assert ckpt.is_file()
    resumed = train(config, synth_cache.parent, "synth", progress=False, checkpoint=ckpt)
    assert resumed["result"]["metrics"] == run["result"]["metrics"]
    assert resumed["result"]["selection"] == run["result"]["selection"]
    # a checkpoint of another config is not used
    other = train(load("synth", overrides={**FAST, "bits": 16, "seed": 1}), synth_cache.parent, "synth",
                  progress=False, checkpoint=ckpt)
    assert other["result"]["seed"] == 1


def test_cli_writes_run_and_removes_checkpoint(synth_cache, tmp_path):
    import typer
    from typer.testing import CliRunner

    from cfrh_cli.train import train_command
    app = typer.Typer()
    app.command()(train_command)
    result = CliRunner().invoke(app, ["--dataset", "synth", "--bits", "8", "--cache-dir", str(synth_cache.parent),
                                      "--runs-dir", str(tmp_path), "--set", "epochs=2", "--set", "eval_every=1",
                                      "--set", "hidden=64", "--no-progress"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "synth" / "cfrh" / "8bit" / "seed0"
    assert (folder / "result.json").is_file() and not (folder / "checkpoint.pt").exists()
    bad = CliRunner().invoke(app, ["--dataset", "synth", "--cache-dir", str(synth_cache.parent), "--set", "nope=1"])
    assert bad.exit_code == 1 and "unknown key 'nope'" in bad.output  # a user error; usage errors keep 2


@pytest.mark.parametrize("density", [0.01, 0.6])
def test_bow_linear_is_a_linear_layer(density):
    """The gathering path (sparse rows) and the dense path give nn.Linear's values and gradients,
    from nn.Linear's own initial weights; an all-zero row gives the bias."""
    from cfrh_train.methods.nets import BowLinear
    torch.manual_seed(3)
    reference = torch.nn.Linear(300, 40)
    torch.manual_seed(3)
    layer = BowLinear(300, 40)
    assert torch.equal(layer.weight, reference.weight.t()) and torch.equal(layer.bias, reference.bias)
    x = (torch.rand(17, 300) < density).float() * torch.randint(1, 4, (17, 300)).float()
    x[5] = 0
    out, expected = layer(x), reference(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[5], reference.bias)
    (out ** 2).sum().backward()
    (expected ** 2).sum().backward()
    torch.testing.assert_close(layer.weight.grad, reference.weight.grad.t(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer.bias.grad, reference.bias.grad, rtol=1e-4, atol=1e-5)
