"""Tuning on validation with the same budget (issue #19): a study beats the default, never
scores the test queries, resumes after a kill, and its best config is a config file."""

import json

import numpy as np
import pytest
from conftest import fake_run

pytest.importorskip("optuna")

from cfrh_train.config import load  # noqa: E402


def tiny_space(tmp_path):
    space = {"lr_img": {"type": "float", "low": 0.001, "high": 0.05, "log": True},
             "lr_txt": {"type": "float", "low": 0.001, "high": 0.05, "log": True},
             "beta": {"type": "float", "low": 0.0, "high": 1.0},
             "gamma": {"type": "float", "low": 0.0, "high": 1.0},
             "eta": {"type": "float", "low": 0.1, "high": 1.0, "off": 0.0},
             "hidden": {"type": "categorical", "choices": [32, 64]}}
    path = tmp_path / "space.json"
    path.write_text(json.dumps(space))
    return path


@pytest.fixture
def counting_queries(synth_cache):
    """Every retrieval whose queries are the test queries, counted (the contract kit's counter)."""
    from cfrh_cache.store import Cache
    from cfrh_testing import counting_test_queries
    calls: list = []
    with counting_test_queries(Cache.open(synth_cache), calls):
        yield calls


@pytest.mark.slow
def test_a_study_beats_the_default_on_validation_and_scores_the_test_queries_once(synth_cache, tmp_path,
                                                                                   counting_queries):
    from cfrh_train.train import train
    from cfrh_train.tune import tune
    summary = tune("synth", "cfrh", 16, 6, synth_cache.parent, tmp_path / "runs", seed=0,
                   space_file=tiny_space(tmp_path))
    assert summary["trials"] == 6 and summary["budget"] == 6
    assert summary["best_val_map"] >= summary["default_val_map"] and summary["default_val_map"] is not None
    assert len(counting_queries) <= 2  # the chosen config's one evaluation (and its last-epoch figures)
    folder = tmp_path / "runs" / "tune" / "synth" / "cfrh" / "16bit"
    assert {p.name for p in folder.iterdir()} >= {"study.db", "best.json", "summary.json", "history.png"}
    best = load("synth", folder / "best.json", {"bits": 16, "device": "cpu"})  # cfrh-train --config takes it as is
    assert best["lr_img"] == summary["best_params"]["lr_img"] and best["method"] == "cfrh"
    assert set(json.loads((folder / "best.json").read_text())) == {"_study", "method", *json.loads(tiny_space(tmp_path).read_text())}
    again = train(best, synth_cache.parent, "synth", progress=False)
    assert again["result"]["selection"]["val_map"] == pytest.approx(summary["best_val_map"])


@pytest.mark.slow
def test_a_killed_study_resumes_with_its_finished_trials(synth_cache, tmp_path, monkeypatch):
    import optuna

    from cfrh.errors import ConfigError
    from cfrh_train import tune as tune_module
    space = tiny_space(tmp_path)
    original = tune_module._finish
    monkeypatch.setattr(tune_module, "_finish", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):  # as if killed after its trials, before the summary
        tune_module.tune("synth", "cfrh", 8, 3, synth_cache.parent, tmp_path / "runs", space_file=space)
    monkeypatch.setattr(tune_module, "_finish", original)
    storage = f"sqlite:///{tmp_path / 'runs' / 'tune' / 'synth' / 'cfrh' / '8bit' / 'study.db'}"
    before = [t.params for t in optuna.load_study(study_name="synth-cfrh-8bit-seed0", storage=storage).trials]
    assert len(before) == 3
    summary = tune_module.tune("synth", "cfrh", 8, 5, synth_cache.parent, tmp_path / "runs", space_file=space)
    after = optuna.load_study(study_name="synth-cfrh-8bit-seed0", storage=storage)
    assert summary["trials"] == 5 and len(after.trials) == 5  # two new trials, the first three kept
    assert [t.params for t in after.trials[:3]] == before
    spent = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in after.trials)
    assert summary["trials_per_hour"] == pytest.approx(3600 * 5 / spent, rel=0.01)  # all five, not this call's two
    folder = tmp_path / "runs" / "tune" / "synth" / "cfrh" / "8bit"
    best = (folder / "best.json").read_text()
    with pytest.raises(ConfigError, match="holds the study of seed 0; tune seed 1 under another --runs-dir"):
        tune_module.tune("synth", "cfrh", 8, 5, synth_cache.parent, tmp_path / "runs", seed=1, space_file=space)
    assert (folder / "best.json").read_text() == best


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the test's own ask() plays the killed worker
def test_a_killed_workers_running_trial_is_failed_and_the_budget_still_met(synth_cache, tmp_path, monkeypatch):
    import time

    import optuna

    from cfrh_train import tune as tune_module
    monkeypatch.setattr(tune_module, "HEARTBEAT_S", 1)
    monkeypatch.setattr(tune_module, "GRACE_S", 1)
    folder = tmp_path / "runs" / "tune" / "synth" / "cfrh" / "8bit"
    folder.mkdir(parents=True)
    url = f"sqlite:///{(folder / 'study.db').resolve()}"
    study = optuna.create_study(study_name="synth-cfrh-8bit-seed0", storage=tune_module._storage(url),
                                direction="maximize")
    study.enqueue_trial({}, user_attrs={"default": True})
    killed = study.ask()  # a worker took the default trial, beat once and died
    study._storage.record_heartbeat(killed._trial_id)
    time.sleep(2.5)
    summary = tune_module.tune("synth", "cfrh", 8, 3, synth_cache.parent, tmp_path / "runs", space_file=tiny_space(tmp_path))
    trials = optuna.load_study(study_name="synth-cfrh-8bit-seed0", storage=url).trials
    assert trials[0].state == optuna.trial.TrialState.FAIL
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert summary["trials"] == len(finished) == 3
    assert summary["default_val_map"] is not None  # the default, enqueued again, was measured
    assert sum(bool(t.user_attrs.get("default")) for t in finished) == 1


def test_search_spaces_are_data_and_checked(tmp_path):
    from cfrh.errors import ConfigError
    from cfrh_train.methods import METHODS
    from cfrh_train.tune import search_space
    for method in METHODS:
        if method not in ("lsh", "random"):
            assert search_space(method)  # every learned method has one, with keys it knows
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"nope": {"type": "float", "low": 0, "high": 1}}))
    with pytest.raises(ConfigError, match="'nope' is not a key of method 'cfrh'"):
        search_space("cfrh", bad)


def test_an_off_switch_turns_a_term_fully_off_or_samples_its_range(tmp_path):
    import optuna

    from cfrh.errors import ConfigError
    from cfrh_train.tune import search_space, suggest
    space = {"eta": {"type": "float", "low": 0.1, "high": 1.0, "off": 0.0},
             "img_hidden": {"type": "categorical", "choices": [[1024], [4096]]}}
    off = suggest(optuna.trial.FixedTrial({"eta:on": False, "img_hidden": "[4096]"}), space)
    assert off == {"eta": 0.0, "img_hidden": [4096]}  # the off value although the range starts at 0.1
    on = suggest(optuna.trial.FixedTrial({"eta:on": True, "eta": 0.25, "img_hidden": "[1024]"}), space)
    assert on == {"eta": 0.25, "img_hidden": [1024]}
    # a study samples both branches, and the off branch sets the value exactly
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    study.optimize(lambda t: seen.append(suggest(t, space)["eta"]) or 0.0, n_trials=40)
    assert 0.0 in seen and any(0.1 <= v <= 1.0 for v in seen) and all(v == 0.0 or v >= 0.1 for v in seen)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hidden": {"type": "categorical", "choices": [512], "off": 1024}}))
    with pytest.raises(ConfigError, match="'hidden': 'off' is for float and int ranges"):
        search_space("cfrh", bad)


def ref_wilcoxon_exact(diff: np.ndarray) -> float:
    """Two-sided exact Wilcoxon signed-rank p by enumerating every sign assignment (no ties, no zeros)."""
    import itertools
    ranks = np.argsort(np.argsort(np.abs(diff))) + 1
    observed = ranks[diff > 0].sum()
    total = ranks.sum()
    stats = np.array([sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=len(diff))])
    extreme = min(observed, total - observed)
    return float(np.mean((stats <= extreme) | (stats >= total - extreme)))


def test_significance_against_an_enumeration_of_sign_flips():
    from cfrh_train.rows import paired_p
    best = [np.array([0.9, 0.8, 0.75, 0.6, 0.95]), np.array([0.7, 0.66, 0.81, 0.5, 0.9])]
    other = [np.array([0.5, 0.81, 0.55, 0.52, 0.7]), np.array([0.61, 0.62, 0.78, 0.45, 0.71])]  # |diffs| distinct
    diff = np.concatenate(best) - np.concatenate(other)
    assert paired_p(best, other) == pytest.approx(ref_wilcoxon_exact(diff), abs=1e-12)
    assert paired_p([np.ones(4)], [np.ones(4)]) is None  # nothing to test


def test_table_marks_a_lead_that_is_not_significant(tmp_path):
    """Two methods whose per-query APs barely differ: the runner-up is marked †; a clear loser is not."""

    from cfrh_train.table import make_table
    rng = np.random.default_rng(0)
    base = rng.random(40)
    magnitudes = np.linspace(0.001, 0.02, 20)
    wobble = rng.permutation(np.concatenate([magnitudes, -magnitudes])) + 1e-6  # no systematic lead
    for method, ap in (("cfrh", base + wobble), ("jdsh", base), ("lsh", base - 0.3)):
        for seed in (0, 1):
            folder = fake_run(tmp_path / "runs", "mirflickr", method, 16, seed, {"i2t": ap.mean(), "t2i": ap.mean()},
                              {"i2t": 0.5, "t2i": 0.5})
            np.savez(folder / "per_query.npz", **{"i2t_ap@50": ap, "t2i_ap@50": ap, "query_index": np.arange(40)})
    md = make_table(tmp_path / "runs")["markdown"].read_text()
    block = md.split("## mAP@50", 1)[1].split("## mAP@all", 1)[0]
    rows = {line.split("|")[1].strip().split(" (")[0]: line for line in block.splitlines() if line.startswith("| ")
            and "seeds" in line and "mAP" not in line}
    marked = [m for m in ("cfrh", "jdsh") if "†" in rows[m]]
    assert len(marked) == 1 and "**" in rows[{"cfrh": "jdsh", "jdsh": "cfrh"}[marked[0]]]  # the best is bold, unmarked
    assert "†" not in rows["lsh"]
    assert "Wilcoxon signed-rank" in md


@pytest.mark.slow
def test_tuned_rows_stand_beside_default_rows_and_name_their_budget(synth_cache, tmp_path):
    from cfrh_train.missing_runs import ensure_runs
    from cfrh_train.table import make_table
    counts = ensure_runs(["synth"], ["cfrh", "lsh"], [8], [0], synth_cache.parent, tmp_path / "runs", "cpu", False,
                         log=lambda m: None, tuned=3)
    assert counts == {"trained": 3, "reused": 0}  # cfrh default, cfrh tuned, lsh (nothing to tune)
    out = make_table(tmp_path / "runs")
    block = next(b for b in out["blocks"] if b.metric == "map@50")
    labels = [r.label for r in block.rows if not r.published]
    assert labels == ["cfrh · default", "cfrh · tuned (3 trials)", "lsh · default"]
    assert "exactly 3 trials" in block.budget and "exactly 3 trials" in out["markdown"].read_text()
    again = ensure_runs(["synth"], ["cfrh", "lsh"], [8], [0], synth_cache.parent, tmp_path / "runs", "cpu", False,
                        log=lambda m: None, tuned=3)
    assert again == {"trained": 0, "reused": 3}  # the study is complete, its runs reused


def test_ablation_table_of_cfrh_on_validation(synth_cache, tmp_path, counting_queries):
    from cfrh_train.ablation import VARIANTS, ablate
    config = tmp_path / "small.json"
    config.write_text(json.dumps({"method": "cfrh", "epochs": 2, "eval_every": 1, "hidden": 32}))
    report = ablate("synth", 8, [0, 1], synth_cache.parent, tmp_path / "runs", config)
    names = list(report["rows"])
    assert names[0] == "full model" and "− text centring (dense text)" not in names  # a BoW cache
    assert set(names) <= set(VARIANTS) and len(names) == len(VARIANTS) - 1
    full = report["rows"]["full model"]
    assert full["delta"] == 0 and set(full["per_seed"]) == {0, 1}
    assert not counting_queries  # validation only: the test queries are never scored
    assert "| − cross-modal term |" in (tmp_path / "runs" / "ablation" / "synth" / "cfrh" / "8bit" / "ablation.md").read_text()


@pytest.mark.slow
def test_parallel_workers_share_one_study_and_keep_its_budget(synth_cache, tmp_path):
    from cfrh_train.tune import tune
    summary = tune("synth", "cfrh", 8, 3, synth_cache.parent, tmp_path / "runs", jobs=2,
                   space_file=tiny_space(tmp_path))
    assert summary["trials"] == 3 and summary["budget"] == 3


@pytest.mark.slow
def test_a_study_tuned_further_still_serves_a_smaller_budget_exactly(synth_cache, tmp_path):
    """make table TUNED=3 after a 5-trial study: judged on the study's first 3 trials, which are
    the trials a 3-trial study runs (same trial 0, same sampler seed)."""
    import optuna

    from cfrh_train.tune import tune
    space = tiny_space(tmp_path)
    three = tune("synth", "cfrh", 8, 3, synth_cache.parent, tmp_path / "a", space_file=space)
    tune("synth", "cfrh", 8, 5, synth_cache.parent, tmp_path / "b", space_file=space)
    again = tune("synth", "cfrh", 8, 3, synth_cache.parent, tmp_path / "b", space_file=space)
    storage = f"sqlite:///{tmp_path / 'b' / 'tune' / 'synth' / 'cfrh' / '8bit' / 'study.db'}"
    trials = optuna.load_study(study_name="synth-cfrh-8bit-seed0", storage=storage).trials
    assert len(trials) == 5 and again["trials"] == 3
    first = [t for t in trials[:3] if t.value is not None]
    assert again["best_val_map"] == max(t.value for t in first)
    assert again["best_params"] == three["best_params"] and again["best_val_map"] == three["best_val_map"]
