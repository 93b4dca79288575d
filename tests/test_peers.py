"""The peers (JDSH, DJSRH, DGCPN, UCCH): their maths against slow loops, their configs, and
that each learns something on the demo data."""

import numpy as np
import pytest
import torch
from conftest import interrupt_after_checkpoints

from cfrh.errors import ConfigError
from cfrh_train.affinity import (
    coexistent,
    djsrh,
    dsdw,
    dsdw_thresholds,
    jdsh,
    knn_graph,
    neighbour_coherence,
)
from cfrh_train.config import load
from cfrh_train.losses import dgcpn_loss, djsrh_loss, jdsh_loss, ranking_loss
from cfrh_train.train import train

PEERS = ("jdsh", "djsrh", "dgcpn", "ucch")


def cos(x):
    n = len(x)
    return np.array([[x[i] @ x[j] / np.linalg.norm(x[i]) / np.linalg.norm(x[j]) for j in range(n)] for i in range(n)])


def unit_rows(m):
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def mse(a, b):
    return np.mean((a - b) ** 2)


@pytest.fixture
def feats():
    rng = np.random.default_rng(0)
    return rng.normal(size=(6, 5)), rng.random((6, 8))


def test_djsrh_affinity_against_loops(feats):
    a, b = feats
    s = 0.9 * (2 * cos(a) - 1) + 0.1 * (2 * cos(b) - 1)
    second = np.array([[sum(s[i, k] * s[j, k] for k in range(6)) / 6 for j in range(6)] for i in range(6)])
    expected = 1.5 * (0.6 * s + 0.4 * second)
    got = djsrh(torch.tensor(a), torch.tensor(b), beta=0.9, eta=0.4, mu=1.5).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-10)


def test_jdsh_joint_and_dsdw_against_loops(feats):
    a, b = feats
    s_i, s_t = 2 * cos(a) - 1, 2 * cos(b) - 1
    high = unit_rows(s_i) @ unit_rows(s_t).T
    expected = 0.5 * s_i + 0.1 * s_t + 0.4 * (high + high.T) / 2
    got = jdsh(torch.tensor(a), torch.tensor(b), 0.5, 0.1, 0.4).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-10)
    left, right, lo, hi = -0.2, 0.3, float(expected.min()), float(expected.max())
    weighted = dsdw(torch.tensor(expected), left, right, lo, hi, l1=0.1, l2=0.2).numpy()
    for i in range(6):
        for j in range(6):
            x = expected[i, j]
            want = (1 + 0.1 * np.exp(-(x - lo))) * x if x < left else (1 + 0.2 * np.exp(x - hi)) * x if x > right else x
            assert weighted[i, j] == pytest.approx(want)


def test_dsdw_thresholds_fit_the_tails():
    rng = np.random.default_rng(1)
    n = 400
    values = rng.normal(0.1, 0.05, (n, n))  # a symmetric bell: both tails on either side of 0.1
    t = dsdw_thresholds(torch.tensor(values), k_left=2.0, k_right=4.0)
    assert t["loc"] == pytest.approx(0.1, abs=0.01)
    off = values[~np.eye(n, dtype=bool)]
    assert t["lo"] == pytest.approx(off.min()) and t["hi"] == pytest.approx(off.max())
    assert t["left"] == pytest.approx(0.1 - 2 * 0.05, abs=0.01)  # Gaussian σ of the left half
    assert t["right"] == pytest.approx(0.1 + 4 * 0.05 * np.sqrt(2 / np.pi), abs=0.01)  # mean |dev| of the right half


def test_neighbour_graph_and_coherence_against_dense(feats):
    a, b = feats
    w, k = 0.3, 2
    c = (1 - w) * cos(a) + w * cos(b)
    np.testing.assert_allclose(coexistent(torch.tensor(a), torch.tensor(b), w).numpy(), c, atol=1e-10)
    p = np.zeros((6, 6))
    for i in range(6):
        others = [j for j in np.argsort(-c[i]) if j != i][:k]
        weights = np.clip(c[i, others], 0, None)
        p[i, others] = weights / weights.sum() if weights.sum() > 0 else 1 / k
    index, weight = knn_graph(torch.tensor(a), torch.tensor(b), w, k, chunk=4)  # chunks of 4 rows: 2 chunks
    batch = torch.tensor([4, 0, 2])
    got = neighbour_coherence(index, weight, batch, 6, scale=float(k)).numpy()
    np.testing.assert_allclose(got, k * p[[4, 0, 2]] @ p[[4, 0, 2]].T, atol=1e-6)


def test_peer_losses_against_loops():
    rng = np.random.default_rng(2)
    ci, ct = rng.uniform(-1, 1, (4, 6)), rng.uniform(-1, 1, (4, 6))
    s = rng.uniform(-1, 1.4, (4, 4))
    n = unit_rows
    t = torch.tensor
    ii, tt, it, ti = n(ci) @ n(ci).T, n(ct) @ n(ct).T, n(ci) @ n(ct).T, n(ct) @ n(ci).T
    diag = np.mean([n(ci)[i] @ n(ct)[i] for i in range(4)])
    assert djsrh_loss(t(ci), t(ct), t(s), 0.1, 0.3)["loss"].item() == pytest.approx(
        mse(it, s) + 0.1 * mse(ii, s) + 0.3 * mse(tt, s))
    assert jdsh_loss(t(ci), t(ct), t(s), 0.1)["loss"].item() == pytest.approx(
        0.1 * (mse(ii, s) + mse(tt, s)) + mse(it, s) + mse(ti, s) - diag)
    off = lambda m: np.array([[0.0 if i == j else m[i, j] for j in range(4)] for i in range(4)])
    pair = np.mean([(n(ci)[i] @ n(ct)[i] - 1.5) ** 2 for i in range(4)])
    dis = mse(off(tt), off(s)) + mse(off(it), off(s)) + mse(off(ii), off(s))
    cons = mse(it, ii) + mse(it, tt) + mse(ii, tt) + mse(it, it.T)
    assert dgcpn_loss(t(ci), t(ct), t(s), 1.5, 0.5, 2.0)["loss"].item() == pytest.approx(pair + 0.5 * dis + 2.0 * cons)


def test_ranking_loss_against_loops():
    rng = np.random.default_rng(3)
    hi, ht = unit_rows(rng.normal(size=(5, 8))), unit_rows(rng.normal(size=(5, 8)))
    scores = hi @ ht.T
    margin, shift = 0.2, 1.0
    total = 0.0
    for rows in (scores, scores.T):  # image→text over rows, text→image over columns
        for i in range(5):
            cost = [x if x >= rows[i, i] - margin else x - shift for x in rows[i]]
            total += (-rows[i, i] + np.log(np.sum(np.exp(cost))) + margin) / 5
    assert ranking_loss(torch.tensor(hi), torch.tensor(ht), margin, shift).item() == pytest.approx(total)


def test_each_method_has_its_own_keys():
    assert load("synth", overrides={"method": "djsrh"})["lambda1"] == 0.1
    assert load("nuswide", overrides={"method": "djsrh"})["beta"] == 0.6  # the dataset's section
    assert load("wiki", overrides={"method": "cfrh"})["hidden"] == 1024
    with pytest.raises(ConfigError, match="unknown key 'lambda1' for method 'cfrh'"):
        load("synth", overrides={"lambda1": 0.2})
    with pytest.raises(ConfigError, match="unknown method 'dcmh'"):
        load("synth", overrides={"method": "dcmh"})
    with pytest.raises(ConfigError, match="'img_hidden' must be a list of int"):
        load("synth", overrides={"method": "ucch", "img_hidden": [512, "x"]})


@pytest.fixture(scope="module")
def random_floor(quality_cache):
    out = train(load("synth", overrides={"method": "random", "bits": 32, "device": "cpu"}), quality_cache, "synth",
                progress=False)
    return out["result"]["metrics"]


@pytest.mark.slow
@pytest.mark.parametrize("method", PEERS)
def test_peer_beats_random_codes(method, quality_cache, random_floor):
    config = load("synth", overrides={"method": method, "bits": 32, "device": "cpu"})
    result = train(config, quality_cache, "synth", progress=False)["result"]
    assert result["method"] == method and result["selection"]["on"] == "val"
    for d in ("i2t", "t2i"):
        assert result["metrics"][d]["map@50"] > random_floor[d]["map@50"] + 0.02, (d, result["metrics"], random_floor)


@pytest.mark.parametrize("method", ("ucch", "dgcpn"))
def test_peers_with_per_item_state_resume_identically(method, synth_cache, tmp_path, monkeypatch):
    """UCCH's memory and negatives and DGCPN's graph survive an interruption."""
    config = load("synth", overrides={"method": method, "bits": 16, "device": "cpu", "epochs": 4, "eval_every": 2,
                                      "batch_size": 32, **({"img_hidden": [64], "txt_hidden": [64]})})
    whole = train(config, synth_cache.parent, "synth", progress=False)
    ckpt = tmp_path / "ckpt.pt"
    with monkeypatch.context() as patch:
        interrupt_after_checkpoints(patch, 1)
        with pytest.raises(KeyboardInterrupt):
            train(config, synth_cache.parent, "synth", progress=False, checkpoint=ckpt)
    resumed = train(config, synth_cache.parent, "synth", progress=False, checkpoint=ckpt)
    assert resumed["result"]["metrics"] == whole["result"]["metrics"]
    np.testing.assert_array_equal(resumed["codes"]["database_image"], whole["codes"]["database_image"])
