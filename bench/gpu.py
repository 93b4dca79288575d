"""``make bench-gpu``: the machine our users train on. Every section yields its rows one at a
time (``run.py`` writes the JSON after each, so a run cut short keeps what it measured):

- stage1 (``stage1.py``, which the CPU set runs too): the stage 1 pipeline (read → resize →
  encode under AMP → Zarr) in images/s against the bare encoder forward on the same batches,
  for ViT-B-32 and ViT-L-14, from JPEG files and from an ``IAll`` array;
- eval: all metrics at NUS-WIDE scale with our CPU kernel, against mAP@50 alone ranked on the
  GPU (``baselines.torch_map_at_k``), with both values (they must agree);
- search (``search.py``, which the CPU set runs too): our exact Hamming top-50 on the CPU
  against faiss's ``GpuIndexBinaryFlat``, where a faiss with GPU support is installed;
- stage2, last (it fills the time left): every method at MIRFlickr shapes, 32 bits: one epoch
  (a one-epoch run) and one whole default run; from those, the cost of the default table and of
  a 30-trial study per method.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from baselines import mirflickr_shaped_cache, torch_map_at_k
from search import search
from stage1 import peak_gpu_gb, stage1

from cfrh.devices import resolve_device
from cfrh_train.config import load
from cfrh_train.methods import TABLE_METHODS, method_class
from cfrh_train.metrics import evaluate
from cfrh_train.train import train

TABLE_BITS, TABLE_SEEDS, STUDY_TRIALS = (16, 32, 64, 128), 3, 30


def stage2(methods, n: int, bits: int, device: str, deadline: float, epochs: int | None = None):
    """Per method: a one-epoch run, then the whole default run (``epochs``: shorter "whole" runs,
    for the dry run), cheapest first; a whole run whose prediction (its one-epoch run and epoch
    time) would end past ``deadline`` (``time.monotonic()``) is reported as predicted, not run.
    Last, the cost of a default table and of a study per method, from those."""
    dev = resolve_device(device)
    with tempfile.TemporaryDirectory() as tmp:
        mirflickr_shaped_cache(Path(tmp), n)
        run = lambda **over: train(load("mirflickr", overrides={"bits": bits, "device": device, **over}), tmp,
                                   "mirflickr", progress=False)["result"]
        run(method="cfrh", epochs=1, eval_every=1)  # CUDA context, cuBLAS and allocator warm-up, not measured
        first = {m: run(method=m, epochs=1, eval_every=1) for m in methods if method_class(m).trainable}
        full = {m: epochs or load("mirflickr", overrides={"method": m})["epochs"] for m in first}
        predicted = {m: round(r["timing"]["train_s"] + (full[m] - 1) * r["timing"]["epoch_s"] + r["timing"]["eval_s"], 2)
                     for m, r in first.items()}
        rows = []
        for method in sorted(methods, key=lambda m: predicted.get(m, 0.0)):  # fitted-once methods first
            if method in first and time.monotonic() + predicted[method] > deadline:
                rows.append(stage2_row(method, bits, dev, full, first, None, predicted))
            else:
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(dev)
                t = time.perf_counter()
                whole = run(method=method, **({"epochs": full[method]} if method in first else {}))
                rows.append(stage2_row(method, bits, dev, full, first, whole, predicted, time.perf_counter() - t))
            yield rows[-1]
    yield costs(rows)


def stage2_row(method: str, bits: int, dev: torch.device, epochs: dict, first: dict, whole: dict | None,
               predicted: dict, wall: float | None = None) -> dict:
    """One method's figures (``epochs``, ``first`` and ``predicted`` are per trainable method);
    ``whole`` None: its whole run did not fit the time left, so its time is the prediction."""
    one = first.get(method)
    shown = whole or one
    row = {"method": method, "bits": bits, "device": str(dev), "trainable": one is not None,
           "epochs": epochs.get(method), "batch_size": shown["config"]["batch_size"],
           "n_train": shown["protocol"]["n_train"], "n_query": shown["protocol"]["n_query"],
           "n_database": shown["protocol"]["n_database"],
           "one_epoch_run_s": one["timing"]["train_s"] if one else None,
           "epoch_s": one["timing"]["epoch_s"] if one else None, "predicted_whole_run_s": predicted.get(method),
           "measured": whole is not None}
    if whole is None:
        return {**row, "whole_run_s": predicted[method], "note": "not run: its prediction ended past the time budget"}
    return {**row, "whole_run_s": round(wall, 2), "train_s": whole["timing"]["train_s"],
            "eval_s": whole["timing"]["eval_s"], "peak_gpu_gb": peak_gpu_gb(dev),
            "map50": [whole["metrics"][d]["map@50"] for d in ("i2t", "t2i")]}


def costs(rows: list[dict]) -> dict:
    """A default table (every method × 4 code lengths × 3 seeds) and a 30-trial study per method,
    from the measured 32-bit runs: a run costs about the same at every code length (the code layer
    is a small part of the work), and a trial at most a run without its test evaluation (pruning
    stops some early)."""
    runs = len(TABLE_BITS) * TABLE_SEEDS
    study = {r["method"]: round(STUDY_TRIALS * r.get("train_s", r["whole_run_s"]) / 60, 1) for r in rows}
    return {"summary": True, "methods": [r["method"] for r in rows],
            "predicted_not_run": [r["method"] for r in rows if not r["measured"]],
            "table_runs": runs * len(rows), "table_minutes": round(runs * sum(r["whole_run_s"] for r in rows) / 60, 1),
            "study_trials": STUDY_TRIALS, "study_minutes_per_method": study,
            "studies_minutes_all_methods": round(sum(study.values()), 1),
            "assumes": "cost independent of the code length; a trial costs at most a run's training"}


def evaluation(bits_list, n_query: int, n_db: int, device: str, classes: int = 21):
    """All metrics on the CPU kernel vs mAP@50 ranked on the device, on the same codes (best of 2)."""
    rng = np.random.default_rng(0)
    ql = (rng.random((n_query, classes)) < 0.2).astype(np.uint8)
    dl = (rng.random((n_db, classes)) < 0.2).astype(np.uint8)
    warm_q, warm_db = np.ones((2, 8), np.int8), np.ones((300, 8), np.int8)
    evaluate(warm_q, warm_db, ql[:2], dl[:300])  # numba's compilation out of the timing
    torch_map_at_k(warm_q, warm_db, ql[:2], dl[:300], 50, device)
    for bits in bits_list:
        q = np.where(rng.random((n_query, bits)) < 0.5, -1, 1).astype(np.int8)
        db = np.where(rng.random((n_db, bits)) < 0.5, -1, 1).astype(np.int8)
        cpu_s = gpu_s = float("inf")
        for _ in range(2):
            t = time.perf_counter()
            ours = evaluate(q, db, ql, dl)
            cpu_s = min(cpu_s, time.perf_counter() - t)
            t = time.perf_counter()
            theirs = torch_map_at_k(q, db, ql, dl, 50, device)
            gpu_s = min(gpu_s, time.perf_counter() - t)
        yield {"bits": bits, "queries": n_query, "items": n_db, "cpu_threads": os.cpu_count(),
               "ours_cpu_all_metrics_s": round(cpu_s, 3), "device": str(resolve_device(device)),
               "device_map50_only_s": round(gpu_s, 3), "ratio_device_to_ours": round(cpu_s / gpu_s, 2),
               "map50_ours": ours["map@50"], "map50_device": theirs,
               "agree": bool(abs(ours["map@50"] - theirs) < 1e-9)}


def sections(args) -> dict:
    """name → the section at full size (docs/benchmarks.md's), or ``toy`` (every section in
    seconds, on any device: the dry run)."""
    dev = args.device
    if args.toy:
        return {"stage1": lambda: stage1(["cfrh-tiny-vit"], 120, 60, 64, 32, 2, dev),
                "eval": lambda: evaluation([32], 200, 5000, dev),
                "search": lambda: search((20000,), (64,), 100, gpu=True),
                "stage2": lambda: stage2(TABLE_METHODS, 2000, 32, dev, args.deadline, epochs=2)}
    workers = args.workers if args.workers is not None else max(2, (os.cpu_count() or 4) - 2)
    return {"stage1": lambda: stage1(["ViT-B-32", "ViT-L-14"], args.images or 8192, 1024, 224, args.batch or 256,
                                     workers, dev),
            "eval": lambda: evaluation([16, 32, 64, 128], 2000, 184577, dev),
            "search": lambda: search((1_000_000,), (64, 128), 1000, gpu=True),
            "stage2": lambda: stage2(TABLE_METHODS, 20015, 32, dev, args.deadline)}
