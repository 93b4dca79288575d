"""The peers as their authors ran them (#17): what the official code does that a reading of the
papers missed, each pinned by a test that fails without it."""

import pytest
from conftest import interrupt_after_checkpoints

from cfrh_train.config import load
from cfrh_train.train import train

TINY = {"bits": 16, "device": "cpu", "img_hidden": [16], "txt_hidden": [16]}


def test_ucch_learning_rate_steps_down_at_epoch_30_and_resumes_on_schedule(synth_cache, tmp_path, monkeypatch):
    config = load("synth", overrides={"method": "ucch", **TINY, "epochs": 32, "eval_every": 15, "n_negatives": 16})
    assert config["lr_milestones"][:3] == [30, 60, 90] and config["lr_gamma"] == 0.1
    whole = train(config, synth_cache.parent, "synth", progress=False)
    lrs = [entry["lr"] for entry in whole["result"]["history"]]
    assert lrs[29] == pytest.approx(1e-4) and lrs[30] == pytest.approx(1e-5) and lrs[31] == pytest.approx(1e-5)
    ckpt = tmp_path / "ckpt.pt"
    with monkeypatch.context() as patch:  # stopped at epoch 29's checkpoint, before the step
        interrupt_after_checkpoints(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            train(config, synth_cache.parent, "synth", progress=False, checkpoint=ckpt)
    resumed = train(config, synth_cache.parent, "synth", progress=False, checkpoint=ckpt)
    assert [entry["lr"] for entry in resumed["result"]["history"]] == lrs
    assert resumed["result"]["metrics"] == whole["result"]["metrics"]


def test_ucch_takes_the_authors_mirflickr_feature_recipe():
    config = load("mirflickr", overrides={"method": "ucch"})
    assert (config["alpha"], config["shift"], config["epochs"], config["margin"]) == (0.7, 0.1, 20, 0.2)
    assert load("nuswide", overrides={"method": "ucch"})["alpha"] == 0.9  # no recipe given: the code's default
