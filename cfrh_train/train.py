"""Stage 2: one loop for every method (nanoGPT-style: read it top to bottom).

cache → method → metrics: the training rows sit on the device as one tensor, batches are index
slices of it, validation (val queries against the training rows) picks the epoch, and the test
queries are evaluated once, at the end, with that epoch's weights. Three parts, each short:
``train`` (the loop), ``Checkpoint`` (save and resume under the same inputs only) and ``run``
with ``write_run`` (the run folder of the contract).
"""

from __future__ import annotations

import copy
import fcntl
import logging
import platform
import random
import time
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import zarr
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from safetensors.torch import save_file

from cfrh import __version__
from cfrh.cliutil import err_console
from cfrh.codes import binarize
from cfrh.devices import resolve_device
from cfrh.diffs import first_difference
from cfrh.errors import TrainingError
from cfrh.fsio import atomic_write, atomic_write_json, sha256_file
from cfrh_train.data import CachedData, load_cache
from cfrh_train.methods import build
from cfrh_train.methods.base import NonFiniteLoss
from cfrh_train.metrics import evaluate
from cfrh_train.plots import plot_pr
from cfrh_train.results import DIRECTIONS, MODEL, inputs, run_dir, write_result

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def hash_rows(method, data: CachedData, index: np.ndarray, device: torch.device, chunk: int = 8192,
              database: bool = False):
    """±1 int8 codes (sign(0) = +1) of the given cache rows, image and text, chunk by chunk
    (``database``: as the method codes database pairs, ``Method.encode_database``)."""
    out_i, out_t = [], []
    encode = method.encode_database if database else method.encode
    for start in range(0, len(index), chunk):
        img, txt = data.rows(index[start:start + chunk])
        ci, ct = encode(torch.from_numpy(img).to(device), torch.from_numpy(txt).to(device))
        out_i.append(binarize(ci.cpu().numpy()))
        out_t.append(binarize(ct.cpu().numpy()))
    return np.concatenate(out_i), np.concatenate(out_t)


def retrieval(method, data: CachedData, queries: np.ndarray, database: np.ndarray, device, k: int,
              full: bool = True) -> tuple[dict, dict]:
    qi, qt = hash_rows(method, data, queries, device)
    di, dt = hash_rows(method, data, database, device, database=True)
    ql, dl = data.labels[queries], data.labels[database]
    metrics = {"i2t": evaluate(qi, dt, ql, dl, k=k, full=full), "t2i": evaluate(qt, di, ql, dl, k=k, full=full)}
    return metrics, {"query_image": qi, "query_text": qt, "database_image": di, "database_text": dt}


class Checkpoint:
    """The training state at the last validation, in one file written atomically. It is resumed
    only when it was made from the very inputs of this run (config, cache arrays, code version);
    otherwise the log says why and training starts afresh."""

    def __init__(self, path: str | Path | None, wanted: dict):
        self.path, self.wanted = (Path(path) if path else None), wanted

    def load(self) -> dict | None:
        """The state on the host: the RNG states must stay there, and the model's and optimiser's
        tensors go to their parameters' device as they are loaded."""
        if self.path is None or not self.path.is_file():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        if state.get("inputs") != self.wanted:
            log.warning("%s: not resumed, it was made from other inputs (%s)", self.path,
                        first_difference(state.get("inputs") or {}, self.wanted))
            return None
        return state

    def save(self, state: dict) -> None:
        if self.path is not None:
            atomic_write(self.path, lambda tmp: torch.save({**state, "inputs": self.wanted}, tmp))


def lr_schedule(optimizer: torch.optim.Optimizer, config: dict):
    """The learning rate's steps, if the method declares any: ×``lr_gamma`` from each epoch of
    ``lr_milestones`` on (UCCH: ×0.1 at 30, 60, 90), stepped once per epoch; None without."""
    if not config["lr_milestones"]:
        return None
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, config["lr_milestones"], config["lr_gamma"])


class Loop:
    """What the loop carries from epoch to epoch, and all a checkpoint holds: the optimiser, the
    learning-rate schedule, the batch order's generator, the best validation so far, the history."""

    def __init__(self, method, config: dict):
        self.optimizer = method.optimizer()
        self.scheduler = lr_schedule(self.optimizer, config)
        self.generator = torch.Generator().manual_seed(config["seed"])
        self.best = {"score": -1.0, "epoch": None, "state": None}
        self.history: list[dict] = []
        self.first = 0  # the epoch to start from (after a resumed checkpoint: the next one)

    def resume(self, state: dict | None, method) -> None:
        if state is None:
            return
        method.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])  # methods that draw (UCCH's negatives) go on identically
        cuda_rng = state.get("cuda_rng")
        if cuda_rng is not None and torch.cuda.is_available() and len(cuda_rng) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_rng)  # dropout on the GPU draws from these
        self.best, self.history, self.first = state["best"], state["history"], state["epoch"] + 1

    def snapshot(self, epoch: int, method) -> dict:
        return {"epoch": epoch, "model": method.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
                "best": self.best, "history": self.history}

    def consider(self, score: float, epoch: int, method) -> None:
        if score > self.best["score"]:
            self.best = {"score": score, "epoch": epoch, "state": copy.deepcopy(method.state_dict())}


def run_epoch(method, loop: Loop, epoch: int, img: torch.Tensor, txt: torch.Tensor, config: dict) -> dict:
    """One pass over the training rows in seeded batches (drop_last, as the lineage does); the
    history entry: mean loss, learning rate and mean loss terms."""
    method.train()
    method.set_epoch(epoch)
    lr = loop.optimizer.param_groups[0]["lr"]
    n = img.shape[0]
    bs = min(config["batch_size"], n)
    order = torch.randperm(n, generator=loop.generator).to(img.device)
    sums: dict[str, torch.Tensor] = {}
    for step in range(n // bs):
        batch = order[step * bs:(step + 1) * bs]
        try:
            terms = method.train_step(img[batch], txt[batch], batch, loop.optimizer, config["grad_clip"])
        except NonFiniteLoss as exc:
            raise TrainingError(f"non-finite loss at epoch {epoch}, step {step}: {exc}; "
                                "lower the learning rates or check the features") from None
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + torch.as_tensor(value).detach()
    if loop.scheduler is not None:
        loop.scheduler.step()
    means = {name: float(value) / max(1, n // bs) for name, value in sums.items()}
    return {"epoch": epoch, "loss": means.get("loss", 0.0), "lr": lr,
            "terms": {name: v for name, v in means.items() if name != "loss"}}


def validate(method, data: CachedData, device, k: int, entry: dict) -> float:
    """The selection score: mean mAP@k of both directions, validation queries against the
    training rows (never the test queries); both directions go into the history entry."""
    method.eval()
    val, _ = retrieval(method, data, data.split["val"], data.split["train"], device, k, full=False)
    entry.update(val_i2t=val["i2t"][f"map@{k}"], val_t2i=val["t2i"][f"map@{k}"])
    return (entry["val_i2t"] + entry["val_t2i"]) / 2


@contextmanager
def epoch_bar(config: dict, first: int, show: bool):
    """A progress bar over epochs, counted from 1 as the summary counts them; yields
    ``update(entry, score)`` (``score``: the epoch's validation, None where it had none)."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("epoch {task.completed}/{task.total}"),
               TextColumn("loss {task.fields[loss]:.4f} val mAP@%d {task.fields[val]}" % config["topk"]),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, disable=not show, console=err_console) as bar:
        task = bar.add_task(f"{config['method']} {config['bits']} bits", total=config["epochs"], loss=0.0, val="–",
                            completed=first)

        def update(entry: dict, score: float | None) -> None:
            bar.update(task, advance=1, loss=entry["loss"], **({"val": f"{score:.4f}"} if score is not None else {}))
        yield update


def train(config: dict, cache_dir: str | Path = "cache", dataset: str = "synth", progress: bool = True,
          checkpoint: str | Path | None = None, data: CachedData | None = None, on_validation=None,
          test: bool = True) -> dict:
    """Train ``config['method']`` on ``cache_dir/dataset``; returns result, codes and history.

    With ``checkpoint``, the state is saved at every validation and a run with the same inputs
    resumes from it, ending exactly as an uninterrupted run would. ``data``: the cache already
    loaded (a tuning study loads it once). ``on_validation(epoch, score)`` hears every validation
    score (a study prunes on it). ``test=False`` scores nothing on the test queries: the result
    has the selection only (a study's trials).
    """
    seed_everything(config["seed"])
    device = resolve_device(config["device"])
    data = data or load_cache(cache_dir, dataset, config["encoder"], config["text"], config["method"])
    img, txt = data.rows(data.split["train"])
    train_img, train_txt = torch.from_numpy(img).to(device), torch.from_numpy(txt).to(device)
    method = build(config["method"], config, img.shape[1], txt.shape[1], data.text_kind).to(device)
    t0 = time.perf_counter()
    method.fit(train_img, train_txt)
    best, history, epoch_s = {"score": -1.0, "epoch": None, "state": None}, [], []
    if method.trainable:
        loop, saved = Loop(method, config), Checkpoint(checkpoint, inputs(config, data.inputs))
        loop.resume(saved.load(), method)
        with epoch_bar(config, loop.first, progress) as show:
            for epoch in range(loop.first, config["epochs"]):
                t = time.perf_counter()
                entry = run_epoch(method, loop, epoch, train_img, train_txt, config)  # ends on the host: timed whole
                epoch_s.append(time.perf_counter() - t)
                due = (epoch + 1) % config["eval_every"] == 0 or epoch + 1 == config["epochs"]
                score = None
                if due:
                    score = validate(method, data, device, config["topk"], entry)
                    loop.consider(score, epoch, method)
                    if on_validation is not None:
                        on_validation(epoch, score)
                loop.history.append(entry)
                if due:
                    saved.save(loop.snapshot(epoch, method))
                show(entry, score)
        best, history = loop.best, loop.history
    else:  # fitted in one go (closed forms, alternating least squares): scored once on validation
        best["score"] = validate(method, data, device, config["topk"], {})
        if on_validation is not None:
            on_validation(0, best["score"])
    timing = {"train_s": round(time.perf_counter() - t0, 3),  # fit, epochs and validations
              "epoch_s": round(sum(epoch_s) / len(epoch_s), 4) if epoch_s else None}  # one epoch's loop, mean
    if not test:
        return {"selection": {"epoch": best["epoch"], "val_map": best["score"]}, "history": history, "timing": timing}
    return evaluate_selected(method, data, config, device, best, history, timing)


def evaluate_selected(method, data: CachedData, config: dict, device, best: dict, history: list,
                      timing: dict) -> dict:
    """The test queries, scored once, with the selected epoch's weights (and the last epoch's,
    for the record); the run's output: result, codes, model, curves and per-query AP."""
    t1, split, k = time.perf_counter(), data.split, config["topk"]
    method.eval()
    last_metrics = None
    if method.trainable and best["epoch"] != config["epochs"] - 1:  # the model in hand is the last epoch's
        last_metrics, _ = retrieval(method, data, split["query"], split["database"], device, k)
    if best["state"] is not None:
        method.load_state_dict(best["state"])
    metrics, codes = retrieval(method, data, split["query"], split["database"], device, k)
    eval_s = time.perf_counter() - t1
    result = make_result(config, data, metrics, last_metrics or metrics, best, {**timing, "eval_s": round(eval_s, 3)},
                         history)
    codes.update(query_index=split["query"], database_index=split["database"])
    curves = {d: metrics[d]["pr_curve"] for d in DIRECTIONS}
    per_query = {f"{d}_{name}": values for d in DIRECTIONS for name, values in metrics[d]["per_query"].items()}
    return {"result": result, "codes": codes, "model": method, "pr_curve": curves,
            "dims": (data.image.shape[1], data.text.shape[1]), "text_kind": data.text_kind,
            "per_query": {**per_query, "query_index": split["query"]}}


def run(config: dict, cache_dir: str | Path, dataset: str, runs_dir: str | Path, progress: bool = True,
        variant: dict | None = None) -> Path:
    """Train with a checkpoint in the run folder (an interrupted run resumes), write the run
    folder, then drop the checkpoint: the folder's result.json, codes and model replace it.
    ``variant`` names a run of another config than the defaults, e.g. ``{"tuned": {"trials": 30,
    …}}`` (its own folder). Its search index is ``cfrh_search.index.export_index``'s to write."""
    folder = run_dir(runs_dir, dataset, config, variant)
    with run_lock(folder):
        ckpt = folder / "checkpoint.pt"
        out = train(config, cache_dir, dataset, progress=progress, checkpoint=ckpt)
        if variant:
            out["result"]["variant"] = variant
        folder = write_run(out, runs_dir)
        ckpt.unlink(missing_ok=True)
    return folder


@contextmanager
def run_lock(folder: Path):
    """One training at a time per run folder: a second one (another terminal, a table and a
    train of the same config) is refused with a line, not left to race over its files."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainingError(f"{folder}: another process is training this run now; wait for it to finish "
                                "(then this run is reused), or give another --runs-dir") from None
        yield


def versions() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "open_clip": version("open_clip_torch"),
            "numpy": np.__version__, "zarr": zarr.__version__, "cfrh": __version__}


def make_result(config, data: CachedData, metrics, last_metrics, best, timing: dict, history) -> dict:
    split = data.attrs.get("split", {})
    strip = lambda m: {d: {k: v for k, v in m[d].items() if k not in ("pr_curve", "per_query")} for d in ("i2t", "t2i")}
    encoder_attrs = data.attrs.get("encoders", {}).get(data.encoder, {})
    return {
        "method": config["method"], "dataset": data.dataset, "bits": config["bits"], "seed": config["seed"],
        "encoder": {"tag": data.encoder, **{k: encoder_attrs.get(k) for k in
                                           ("model", "pretrained", "weights_sha256", "warning", "origin")
                                           if k in encoder_attrs}},
        "text": {"input": data.text_input or "dataset", "kind": data.text_kind},
        "protocol": {"name": split.get("protocol"), "seed": split.get("seed"), "n_query": int(data.split["query"].size),
                     "n_database": int(data.split["database"].size), "n_train": int(data.split["train"].size),
                     "n_val": int(data.split["val"].size), "notes": split.get("notes", [])},
        "config": config,
        "selection": {"on": "val", "epoch": best["epoch"], "val_map": best["score"] if best["score"] >= 0 else None,
                      "rule": f"best mean val mAP@{config['topk']} (val queries vs. train rows), evaluated every "
                              f"{config['eval_every']} epochs" if best["epoch"] is not None else
                              "fitted once, scored once on validation" if best["score"] >= 0 else "no training"},
        "metrics": strip(metrics),
        "metrics_last_epoch": strip(last_metrics),
        "timing": timing,
        "history": history,
        "versions": versions(),
        "cache": {"cfrh_version": data.attrs.get("cfrh_version"), "created": data.attrs.get("created")},
        "inputs": inputs(config, data.inputs),
    }


def write_run(out: dict, runs_dir: str | Path) -> Path:
    """The run folder of the contract (``cfrh_train.results``): codes.npz, per_query.npz,
    pr_curve.json/png, model.safetensors, and result.json written last."""
    result, codes = out["result"], out["codes"]
    folder = run_dir(runs_dir, result["dataset"], result["config"], result.get("variant"))
    state = {k: v.contiguous() for k, v in out["model"].index_state().items()}
    atomic_write(folder / MODEL, lambda tmp: save_file(state, str(tmp)))
    result["model"] = {"file": MODEL, "sha256": sha256_file(folder / MODEL), "dims": list(out["dims"]),
                       "text_kind": out["text_kind"]}
    atomic_write(folder / "codes.npz", lambda tmp: np.savez_compressed(open(tmp, "wb"), **codes))
    if out.get("per_query"):  # per-query AP of the test queries: the table's paired significance tests
        atomic_write(folder / "per_query.npz", lambda tmp: np.savez_compressed(open(tmp, "wb"), **out["per_query"]))
    curves = out.get("pr_curve")
    if curves:
        atomic_write_json(folder / "pr_curve.json", curves)
        plot_pr(curves, folder / "pr_curve.png", f"{result['method']} {result['dataset']} {result['bits']} bits")
    write_result(folder, result)
    return folder
