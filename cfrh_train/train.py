"""Stage 2: one loop for every method (nanoGPT-style: read it top to bottom).

cache → method → metrics: the training rows sit on the device as one tensor, batches are index
slices of it, validation (val queries against the training rows) picks the epoch, and the test
queries are evaluated once, at the end, with that epoch's weights. Three parts, each short:
``train`` (the loop), ``Checkpoint`` (save and resume under the same inputs only) and ``run``
with ``write_run`` (the run folder of the contract).
"""

from __future__ import annotations

import copy
import logging
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from cfrh.codes import binarize
from cfrh.devices import resolve_device
from cfrh.errors import TrainingError
from cfrh.fsio import atomic_write, atomic_write_json
from cfrh_train.data import CachedData, load_cache
from cfrh_train.methods import build
from cfrh_train.methods.base import NonFiniteLoss
from cfrh_train.metrics import evaluate
from cfrh_train.plots import plot_pr
from cfrh_train.results import inputs, write_result

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def hash_rows(method, data: CachedData, index: np.ndarray, device: torch.device, chunk: int = 8192):
    """±1 int8 codes (sign(0) = +1) of the given cache rows, image and text, chunk by chunk."""
    out_i, out_t = [], []
    for start in range(0, len(index), chunk):
        img, txt = data.rows(index[start:start + chunk])
        ci, ct = method.encode(torch.from_numpy(img).to(device), torch.from_numpy(txt).to(device))
        out_i.append(binarize(ci.cpu().numpy()))
        out_t.append(binarize(ct.cpu().numpy()))
    return np.concatenate(out_i), np.concatenate(out_t)


def retrieval(method, data: CachedData, queries: np.ndarray, database: np.ndarray, device, k: int,
              full: bool = True) -> tuple[dict, dict]:
    qi, qt = hash_rows(method, data, queries, device)
    di, dt = hash_rows(method, data, database, device)
    ql, dl = data.labels[queries], data.labels[database]
    metrics = {"i2t": evaluate(qi, dt, ql, dl, k=k, full=full), "t2i": evaluate(qt, di, ql, dl, k=k, full=full)}
    return metrics, {"query_image": qi, "query_text": qt, "database_image": di, "database_text": dt}


class Checkpoint:
    """The training state at the last validation, in one file written atomically. It is resumed
    only when it was made from the very inputs of this run (config, cache arrays, code version);
    otherwise the log says why and training starts afresh."""

    def __init__(self, path: str | Path | None, wanted: dict):
        self.path, self.wanted = (Path(path) if path else None), wanted

    def load(self, device) -> dict | None:
        if self.path is None or not self.path.is_file():
            return None
        state = torch.load(self.path, map_location=device, weights_only=False)
        if state.get("inputs") != self.wanted:
            from cfrh.diffs import first_difference
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
    split = data.split
    img, txt = data.rows(split["train"])
    train_img, train_txt = torch.from_numpy(img).to(device), torch.from_numpy(txt).to(device)
    method = build(config["method"], config, img.shape[1], txt.shape[1], data.text_kind).to(device)
    k = config["topk"]
    history, best = [], {"score": -1.0, "epoch": None, "state": None}
    t0 = time.perf_counter()
    method.fit(train_img, train_txt)
    if method.trainable:
        optimizer = method.optimizer()
        scheduler = lr_schedule(optimizer, config)
        generator = torch.Generator().manual_seed(config["seed"])
        n, bs = train_img.shape[0], min(config["batch_size"], train_img.shape[0])
        saved = Checkpoint(checkpoint, inputs(config, data.inputs))
        first = 0
        if state := saved.load(device):
            method.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
            generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])  # methods that draw (UCCH's negatives) go on identically
            best, history, first = state["best"], state["history"], state["epoch"] + 1
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("loss {task.fields[loss]:.4f} val mAP@%d {task.fields[val]}" % k), TimeElapsedColumn()]
        with Progress(*columns, disable=not progress) as bar:
            task = bar.add_task(f"{config['method']} {config['bits']} bits", total=config["epochs"], loss=0.0,
                                val="–", completed=first)
            for epoch in range(first, config["epochs"]):
                method.train()
                method.set_epoch(epoch)
                lr = optimizer.param_groups[0]["lr"]
                order = torch.randperm(n, generator=generator).to(device)
                sums: dict[str, torch.Tensor] = {}
                for step in range(n // bs):  # drop_last, as the lineage does
                    batch = order[step * bs:(step + 1) * bs]
                    try:
                        terms = method.train_step(train_img[batch], train_txt[batch], batch, optimizer,
                                                  config["grad_clip"])
                    except NonFiniteLoss as exc:
                        raise TrainingError(f"non-finite loss at epoch {epoch}, step {step}: {exc}; "
                                            "lower the learning rates or check the features") from None
                    for name, value in terms.items():
                        sums[name] = sums.get(name, 0.0) + torch.as_tensor(value).detach()
                if scheduler is not None:
                    scheduler.step()
                means = {name: float(value) / max(1, n // bs) for name, value in sums.items()}
                entry = {"epoch": epoch, "loss": means.get("loss", 0.0), "lr": lr,
                         "terms": {name: v for name, v in means.items() if name != "loss"}}
                if (epoch + 1) % config["eval_every"] == 0 or epoch + 1 == config["epochs"]:
                    method.eval()
                    val, _ = retrieval(method, data, split["val"], split["train"], device, k, full=False)
                    score = (val["i2t"][f"map@{k}"] + val["t2i"][f"map@{k}"]) / 2
                    entry.update(val_i2t=val["i2t"][f"map@{k}"], val_t2i=val["t2i"][f"map@{k}"])
                    if score > best["score"]:
                        best = {"score": score, "epoch": epoch, "state": copy.deepcopy(method.state_dict())}
                    bar.update(task, val=f"{score:.4f}")
                    if on_validation is not None:
                        on_validation(epoch, score)
                history.append(entry)
                if "val_i2t" in entry:
                    saved.save({"epoch": epoch, "model": method.state_dict(), "optimizer": optimizer.state_dict(),
                                "scheduler": None if scheduler is None else scheduler.state_dict(),
                                "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                                "best": best, "history": history})
                bar.update(task, advance=1, loss=entry["loss"])
    train_s = time.perf_counter() - t0
    if not test:
        return {"selection": {"epoch": best["epoch"], "val_map": best["score"]}, "history": history,
                "timing": {"train_s": round(train_s, 3)}}
    t1 = time.perf_counter()
    method.eval()
    last_metrics = None
    if method.trainable and best["epoch"] != config["epochs"] - 1:  # the model in hand is the last epoch's
        last_metrics, _ = retrieval(method, data, split["query"], split["database"], device, k)
    if best["state"] is not None:
        method.load_state_dict(best["state"])
    metrics, codes = retrieval(method, data, split["query"], split["database"], device, k)
    eval_s = time.perf_counter() - t1
    result = make_result(config, data, metrics, last_metrics or metrics, best, train_s, eval_s, history)
    codes.update(query_index=split["query"], database_index=split["database"])
    curves = {d: metrics[d]["pr_curve"] for d in ("i2t", "t2i")}
    per_query = {f"{d}_{name}": values for d in ("i2t", "t2i") for name, values in metrics[d]["per_query"].items()}
    return {"result": result, "codes": codes, "model": method, "pr_curve": curves, "dims": (img.shape[1], txt.shape[1]),
            "text_kind": data.text_kind, "per_query": {**per_query, "query_index": split["query"]}}


def run(config: dict, cache_dir: str | Path, dataset: str, runs_dir: str | Path, progress: bool = True,
        export: bool = False, index=None, variant: dict | None = None) -> Path:
    """Train with a checkpoint in the run folder (an interrupted run resumes), write the run
    folder, then drop the checkpoint: the folder's result.json and codes replace it.
    ``export`` also writes the search index (``<run>/index/``, see ``cfrh_train.search``), of
    the kind ``index`` says (a ``search.IndexSpec``; exact by default). ``variant`` names a run
    of another config than the defaults, e.g. ``{"tuned": {"trials": 30, …}}`` (its own folder)."""
    ckpt = run_dir(runs_dir, dataset, config, variant) / "checkpoint.pt"
    out = train(config, cache_dir, dataset, progress=progress, checkpoint=ckpt)
    if variant:
        out["result"]["variant"] = variant
    folder = write_run(out, runs_dir)
    if export:
        from cfrh_train.search import IndexSpec, export_index
        export_index(out, cache_dir, dataset, folder / "index", index or IndexSpec())
    ckpt.unlink(missing_ok=True)
    return folder


def versions() -> dict:
    import open_clip
    import zarr

    from cfrh import __version__
    return {"python": platform.python_version(), "torch": torch.__version__, "open_clip": open_clip.__version__,
            "numpy": np.__version__, "zarr": zarr.__version__, "cfrh": __version__}


def make_result(config, data: CachedData, metrics, last_metrics, best, train_s, eval_s, history) -> dict:
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
        "selection": {"on": "val", "epoch": best["epoch"], "val_map": best["score"] if best["epoch"] is not None else None,
                      "rule": f"best mean val mAP@{config['topk']} (val queries vs. train rows), "
                              "evaluated every eval_every epochs" if best["epoch"] is not None else "no training"},
        "metrics": strip(metrics),
        "metrics_last_epoch": strip(last_metrics),
        "timing": {"train_s": round(train_s, 3), "eval_s": round(eval_s, 3)},
        "history": history,
        "versions": versions(),
        "cache": {"cfrh_version": data.attrs.get("cfrh_version"), "created": data.attrs.get("created")},
        "inputs": inputs(config, data.inputs),
    }


def run_dir(runs_dir: str | Path, dataset: str, config: dict, variant: dict | None = None) -> Path:
    """``runs/<dataset>/<method>/<bits>bit/seed<seed>/``; a run on a named encoder (a cache with
    several backbones) gets ``seed<seed>-<encoder>`` so that backbones never overwrite each other,
    a tuned run ``…-tuned<N>`` beside the default one."""
    seed = f"seed{config['seed']}" + (f"-{config['encoder']}" if config.get("encoder") else "")
    seed += f"-tuned{variant['tuned']['trials']}" if variant and "tuned" in variant else ""
    return Path(runs_dir) / dataset / config["method"] / f"{config['bits']}bit" / seed


def write_run(out: dict, runs_dir: str | Path) -> Path:
    """The run folder of the contract: codes.npz, pr_curve.json/png, and result.json written last."""
    result, codes = out["result"], out["codes"]
    folder = run_dir(runs_dir, result["dataset"], result["config"], result.get("variant"))
    atomic_write(folder / "codes.npz", lambda tmp: np.savez_compressed(open(tmp, "wb"), **codes))
    if out.get("per_query"):  # per-query AP of the test queries: the table's paired significance tests
        atomic_write(folder / "per_query.npz", lambda tmp: np.savez_compressed(open(tmp, "wb"), **out["per_query"]))
    curves = out.get("pr_curve")
    if curves:
        atomic_write_json(folder / "pr_curve.json", curves)
        plot_pr(curves, folder / "pr_curve.png", f"{result['method']} {result['dataset']} {result['bits']} bits")
    write_result(folder, result)
    return folder
