"""``cfrh-tune``: every method tuned with the same budget, on the validation split only.

A study (Optuna: TPE sampler, median pruning on the validation mAP the training loop reports
every ``eval_every`` epochs) lives in ``RUNS/tune/<dataset>/<method>/<bits>bit/study.db``
(SQLite; any Optuna storage URL works, e.g. PostgreSQL for a cluster). Its first trial is the
untouched default config, so the default's validation score is measured in the same study.
The objective is the validation mAP@k (mean of both directions) and nothing else: trials never
score the test queries. When the budget is spent, the chosen config is trained once more and
its test queries scored once; that and the study's record go to ``summary.json``, the config to
``best.json`` (a file ``cfrh-train --config`` takes as it is). Search spaces are data:
``configs/search/<method>.json`` (or ``--space FILE``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import multiprocessing as mp
import os
import warnings
from pathlib import Path

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from cfrh.cliutil import err_console
from cfrh.errors import ConfigError
from cfrh.fsio import atomic_write_json
from cfrh.mpl import pyplot
from cfrh_train.config import defaults, load, merge
from cfrh_train.data import load_cache
from cfrh_train.methods import PLUGINS, is_plugin, plugin, register
from cfrh_train.train import train

SEARCH = Path(__file__).parent / "configs" / "search"
HEARTBEAT_S, GRACE_S = 30, 120  # a RUNNING trial silent for GRACE_S is a killed worker's: failed, not counted
log = logging.getLogger(__name__)


class BudgetSpent(Exception):
    """A worker's trial that would go past the budget (parallel workers): dropped, not counted."""


def has_search_space(method: str) -> bool:
    """Whether the method can be tuned without ``--space``: a built-in's file, a user method's attribute."""
    return bool(plugin(method).space) if is_plugin(method) else (SEARCH / f"{method}.json").is_file()


def search_space(method: str, path: str | Path | None = None) -> dict:
    """The method's space: name → {type: float|int|categorical, low, high, log, step, choices}.

    A float or int may carry ``"off": value``: a switch (Optuna's conditional parameter
    ``<name>:on``) that either sets the key to that value or samples it from the range. A term a
    sampler would otherwise almost never turn fully off (η = 0 out of [0, 1]) is then one of
    two equally likely choices."""
    if path is None and is_plugin(method):
        path, space = plugin(method).source, plugin(method).space
        if not space:
            raise ConfigError(f"{path}: method {method!r} has no search_space; give it one (as configs/search/) "
                              "or pass --space FILE")
    else:
        path = Path(path) if path else SEARCH / f"{method}.json"
        if not path.is_file():
            raise ConfigError(f"{path}: no search space for method {method!r}; write one (see configs/search/)")
        space = json.loads(path.read_text())
    space = {k: v for k, v in space.items() if not k.startswith("_")}
    known = defaults(method)
    for key, spec in space.items():
        if key not in known:
            raise ConfigError(f"{path}: {key!r} is not a key of method {method!r}")
        if spec.get("type") not in ("float", "int", "categorical"):
            raise ConfigError(f"{path}: {key!r} needs type float, int or categorical")
        if "off" in spec and spec["type"] == "categorical":
            raise ConfigError(f"{path}: {key!r}: 'off' is for float and int ranges; add the value to choices")
    return space


def suggest(trial, space: dict) -> dict:
    """One point of the space, as config overrides."""
    for key, spec in space.items():
        if "off" in spec and not trial.suggest_categorical(f"{key}:on", [True, False]):
            continue
        if spec["type"] == "float":
            trial.suggest_float(key, spec["low"], spec["high"], log=spec.get("log", False))
        elif spec["type"] == "int":
            trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step", 1))
        else:  # Optuna's choices are scalars: a list (layer widths) travels as its JSON text
            trial.suggest_categorical(key, [json.dumps(c) if isinstance(c, list) else c for c in spec["choices"]])
    return _decoded(trial.params, space)


def study_dir(runs_dir: str | Path, dataset: str, method: str, bits: int) -> Path:
    return Path(runs_dir) / "tune" / dataset / method / f"{bits}bit"


def tune(dataset: str, method: str, bits: int, trials: int, cache_dir: str | Path = "cache",
         runs_dir: str | Path = "runs", seed: int = 0, device: str = "cpu", timeout: float | None = None,
         jobs: int = 1, space_file: str | Path | None = None, storage: str | None = None,
         progress: bool = False) -> dict:
    """Run (or resume) the study until it holds ``trials`` finished trials; returns the summary."""
    if trials < 1 or jobs < 1:
        raise ConfigError(f"--trials {trials} --jobs {jobs}: expected positive numbers")
    folder = study_dir(runs_dir, dataset, method, bits)
    summary_path = folder / "summary.json"
    held = json.loads(summary_path.read_text()).get("seed", seed) if summary_path.is_file() else seed
    if held != seed:
        raise ConfigError(f"{summary_path}: holds the study of seed {held}; tune seed {seed} under another "
                          f"--runs-dir (its best.json would be overwritten)")
    folder.mkdir(parents=True, exist_ok=True)
    with _study_lock(folder) as alone, study_bar(progress, f"{method} {bits} bits", trials) as shown:
        return _tune(dataset, method, bits, trials, cache_dir, folder, seed, device, timeout, jobs, space_file,
                     storage, alone and storage is None, shown)


@contextlib.contextmanager
def study_bar(show: bool, title: str, trials: int):
    """A bar on stderr: trial k of N, pruned so far, best validation so far, time left; yields
    ``update(study)``, which reads all of that from the study itself (so workers need not report)."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("trial {task.completed}/{task.total}"),
               TextColumn("{task.fields[pruned]} pruned · best val {task.fields[best]}"), TimeRemainingColumn()]
    with Progress(*columns, disable=not show, console=err_console) as bar:
        task = bar.add_task(title, total=trials, pruned=0, best="–")

        def update(study) -> None:
            import optuna
            trials_now = study.get_trials(deepcopy=False)
            states = [t.state for t in trials_now]
            values = [t.value for t in trials_now if t.state == optuna.trial.TrialState.COMPLETE]
            done = sum(s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for s in states)
            bar.update(task, completed=min(done, trials), pruned=sum(s == optuna.trial.TrialState.PRUNED for s in states),
                       best=f"{max(values):.4f}" if values else "–")
        yield update


@contextlib.contextmanager
def _study_lock(folder: Path):
    """Held (shared) by every ``tune`` working on the study in ``folder`` for as long as it works;
    yields whether this one is alone, i.e. no live process on this machine holds a trial of it."""
    with open(folder / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        fcntl.flock(handle, fcntl.LOCK_SH)  # the exclusive lock, if taken, becomes shared
        yield alone


def _tune(dataset: str, method: str, bits: int, trials: int, cache_dir, folder: Path, seed: int, device: str,
          timeout: float | None, jobs: int, space_file, storage: str | None, alone: bool, shown=None) -> dict:
    """``tune`` under the study's lock; ``alone``: a RUNNING trial is a killed process's, failed now."""
    import optuna
    storage = storage or f"sqlite:///{(folder / 'study.db').resolve()}"
    base = load(dataset, None, {"method": method, "bits": bits, "seed": seed, "device": device})
    space = search_space(method, space_file)
    name = f"{dataset}-{method}-{bits}bit-seed{seed}"
    db = _storage(storage)  # one engine for this process; workers open their own
    study = optuna.create_study(study_name=name, storage=db, direction="maximize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0))
    with _experimental():
        optuna.storages.fail_stale_trials(study)  # a killed worker's trial, before it is taken for alive
    if alone:  # no live process holds a trial of this study: a RUNNING one was killed, whatever its heartbeat
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
    if not any(t.user_attrs.get("default") and t.state != optuna.trial.TrialState.FAIL for t in study.trials):
        # trial 0: the untouched default config (it may lie outside the space); again if its worker was killed
        study.enqueue_trial({}, user_attrs={"default": True})
    shown = shown or (lambda s: None)
    shown(study)
    if jobs == 1:
        _optimize(storage, name, dataset, cache_dir, base, space, trials, timeout, seed, threads=None,
                  on_trial=shown)
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        ctx = mp.get_context("spawn")
        users = [p.record["spec"] for p in PLUGINS.values() if p.record["spec"]]  # a fresh process registers them again
        workers = [ctx.Process(target=_optimize, args=(storage, name, dataset, str(cache_dir), base, space, trials,
                                                        timeout, seed + 1 + j, threads, users)) for j in range(jobs)]
        for w in workers:
            w.start()
        while any(w.is_alive() for w in workers):  # the workers' trials, as the study records them
            shown(study)
            for w in workers:
                w.join(timeout=1.0)
        shown(study)
    study = optuna.load_study(study_name=name, storage=db)
    return _finish(study, folder, dataset, method, bits, cache_dir, base, space, trials, storage, timeout)


def _storage(url: str):
    """The study's database with Optuna's heartbeat: a trial whose worker was killed (left
    RUNNING) is failed once silent for GRACE_S, so it neither holds a place in the budget
    nor counts as finished when the study is resumed."""
    import optuna
    with _experimental():
        return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)


@contextlib.contextmanager
def _experimental():
    """Optuna marks its heartbeat experimental (a warning at every use); we rely on it knowingly."""
    import optuna
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _optimize(storage: str, name: str, dataset: str, cache_dir, base: dict, space: dict, trials: int,
              timeout: float | None, seed: int, threads: int | None, users: list[str] = (), on_trial=None) -> None:
    """One worker: trials until the study holds ``trials`` finished ones (the cache loaded once);
    ``users``: the user methods' ``FILE.py:Class`` to register in this process."""
    for spec in users:
        register(spec)
    import optuna
    if threads:
        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=_storage(storage),
                              sampler=optuna.samplers.TPESampler(seed=seed),
                              pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0))
    data = load_cache(cache_dir, dataset, base["encoder"], base["text"], base["method"])
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)

    def objective(trial) -> float:
        ahead = [t for t in study.get_trials(deepcopy=False)
                 if t.number < trial.number and t.state in (*done, optuna.trial.TrialState.RUNNING)]
        if len(ahead) >= trials:  # other workers hold the rest of the budget
            study.stop()
            raise BudgetSpent
        config = base if trial.user_attrs.get("default") else merge(base, suggest(trial, space), "search space")

        def report(epoch: int, score: float) -> None:
            trial.report(score, epoch)
            if not trial.user_attrs.get("default") and trial.should_prune():  # the default is measured in full
                raise optuna.TrialPruned()
        out = train(config, cache_dir, dataset, progress=False, data=data, on_validation=report, test=False)
        trial.set_user_attr("epoch", out["selection"]["epoch"])
        trial.set_user_attr("train_s", out["timing"]["train_s"])
        return out["selection"]["val_map"]

    left = trials - len([t for t in study.trials if t.state in done])
    if left > 0:
        heard = [] if on_trial is None else [lambda study, trial: on_trial(study)]
        study.optimize(objective, n_trials=left, timeout=timeout, catch=(BudgetSpent,),
                       callbacks=[optuna.study.MaxTrialsCallback(trials, states=done), *heard])


def _finish(study, folder: Path, dataset: str, method: str, bits: int, cache_dir, base: dict, space: dict,
            trials: int, storage: str, timeout: float | None = None) -> dict:
    """best.json, plots, and the test queries of the chosen config scored once (summary.json).

    The budget is exact: a study that already holds more finished trials (one tuned further
    before) is judged on its first ``trials`` of them by number. With one worker these are the
    very trials a study of that budget runs (the same trial 0 and sampler seed); with ``--jobs``
    they are the first ones the workers started."""
    import optuna
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    finished = sorted((t for t in study.trials if t.state in done), key=lambda t: t.number)[:trials]
    complete = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
    if len(finished) < trials and timeout is None:
        running = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))
        raise ConfigError(f"{folder}: the study holds {len(finished)} of its {trials} finished trials "
                          f"({running} still running elsewhere); run the same command again to finish it")
    if not complete:
        raise ConfigError(f"{folder}: no trial finished (all pruned or failed); give more --trials or --timeout")
    best = max(complete, key=lambda t: (t.value, -t.number))
    default = next((t for t in finished if t.user_attrs.get("default")), None)
    params = {k: v for k, v in merge(base, _decoded(best.params, space), "best trial").items() if k in space}
    made_for = {"dataset": dataset, "method": method, "bits": bits, "seed": base["seed"], "trials": trials}
    atomic_write_json(folder / "best.json", {"_study": made_for, "method": method, **params})
    summary_path = folder / "summary.json"
    previous = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if previous.get("best_trial") == best.number and previous.get("test_metrics"):
        test_metrics = previous["test_metrics"]  # scored once already, for this very config
    else:
        final = train(merge(base, params, "best.json"), cache_dir, dataset, progress=False)
        test_metrics = final["result"]["metrics"]
    summary = {"dataset": dataset, "method": method, "bits": bits, "seed": base["seed"], "trials": len(finished),
               "budget": trials, "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in finished),
               "best_trial": best.number, "best_val_map": best.value, "best_params": params,
               "default_val_map": default.value if default is not None and default.value is not None else None,
               "objective": f"validation mAP@{base['topk']} (mean of I→T and T→I), validation split only",
               "test_metrics": test_metrics, "test_scored": "once, for the chosen config",
               "trials_per_hour": _per_hour(finished),
               "space": space, "storage": storage}
    atomic_write_json(summary_path, summary)
    _plots(study, folder)
    return summary


def _per_hour(trials: list) -> float | None:
    """Trials per hour of one worker, from the trials' own run times: a study resumed after a
    kill counts all its trials, not only the last call's."""
    seconds = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials
                  if t.datetime_start and t.datetime_complete)
    return round(3600 * len(trials) / seconds, 1) if seconds > 0 else None


def _decoded(params: dict, space: dict) -> dict:
    """A trial's Optuna parameters as config overrides (lists decoded, switches applied)."""
    out = {}
    for key, spec in space.items():
        if "off" in spec and params.get(f"{key}:on") is False:
            out[key] = spec["off"]
        elif key in params:
            v = params[key]
            listed = spec["type"] == "categorical" and isinstance(v, str) and v.startswith("[")
            out[key] = json.loads(v) if listed else v
    return out


def _plots(study, folder: Path) -> None:
    """Optuna's own matplotlib figures: the optimisation history and the parameter importances."""
    import optuna
    from optuna.visualization import matplotlib as ovm

    plt = pyplot()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        ax = ovm.plot_optimization_history(study)
        ax.figure.savefig(folder / "history.png", dpi=100, bbox_inches="tight")
        plt.close(ax.figure)
        if len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) > 2:
            try:
                ax = ovm.plot_param_importances(
                    study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
                ax.figure.savefig(folder / "importance.png", dpi=100, bbox_inches="tight")
                plt.close(ax.figure)
            except (RuntimeError, ValueError) as exc:  # too few distinct values to rank parameters
                log.warning("no parameter-importance plot: %s", exc)
