"""``cfrh-tune --ablate``: CFRH with each part removed or swapped, on the validation split only,
the seeds pooled, as a paper's ablation table. It shows what holds the method back on a cache.

Written to ``RUNS/ablation/<dataset>/cfrh/<bits>bit/ablation.{md,json}``; each variant's
validation mAP@k per seed is kept, and the mean ± std over seeds, with Δ against the full model.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from cfrh.fsio import atomic_write_json, atomic_write_text
from cfrh_train.config import load, merge
from cfrh_train.data import load_cache
from cfrh_train.train import train

VARIANTS = {  # name → config overrides on the full model (a base config, e.g. a best.json, may come first)
    "full model": {},
    "− intra-modal term (δ = 0)": {"delta": 0.0},
    "− cross-modal term": {"w_cross": 0.0},
    "− paired-code cosine": {"w_pair": 0.0},
    "− reconstruction (φ = 0)": {"phi": 0.0},
    "− joint affinity S_IT (η = 0)": {"eta": 0.0},
    "S from the image alone (γ = η = 0)": {"gamma": 0.0, "eta": 0.0},
    "S from the text alone (β = η = 0)": {"beta": 0.0, "eta": 0.0},
    "− image centring": {"center_features": False},
    "− text centring (dense text)": {"center_text": False},
    "affinity map swapped (cos ↔ 2cos−1)": {"affinity_map": "swap"},
    "BoW target: counts instead of binary": {"bow_target": "counts"},
    "+ quantisation term (λ = 0.1)": {"lam": 0.1},
}


def ablate(dataset: str, bits: int, seeds: list[int], cache_dir: str | Path = "cache", runs_dir: str | Path = "runs",
           config_file: str | Path | None = None, device: str = "cpu") -> dict:
    """Train every variant on every seed, score the validation split only, write the table."""
    base = load(dataset, config_file, {"method": "cfrh", "bits": bits, "device": device})
    data = load_cache(cache_dir, dataset, base["encoder"], base["text"], base["method"])
    k = base["topk"]
    rows = {}
    for name, change in VARIANTS.items():
        if "center_text" in change and data.text_kind != "dense":
            continue  # a BoW is never centred: nothing to remove
        if "bow_target" in change and data.text_kind != "bow":
            continue
        change = dict(change)
        if change.get("affinity_map") == "swap":
            change["affinity_map"] = "2cos-1" if base["affinity_map"] == "cos" else "cos"
        scores = {}
        for seed in seeds:
            config = merge(base, {**change, "seed": seed}, f"ablation {name}")
            out = train(config, cache_dir, dataset, progress=False, data=data, test=False)
            last = next(h for h in reversed(out["history"]) if h["epoch"] == out["selection"]["epoch"])
            scores[seed] = {"mean": out["selection"]["val_map"], "i2t": last["val_i2t"], "t2i": last["val_t2i"]}
        rows[name] = {"change": change, "per_seed": scores,
                      **{f"{part}_mean": statistics.fmean(s[part] for s in scores.values()) for part in ("mean", "i2t", "t2i")},
                      "std": statistics.stdev([s["mean"] for s in scores.values()]) if len(scores) > 1 else 0.0}
    full = rows["full model"]["mean_mean"]
    for row in rows.values():
        row["delta"] = row["mean_mean"] - full
    folder = Path(runs_dir) / "ablation" / dataset / "cfrh" / f"{bits}bit"
    report = {"dataset": dataset, "bits": bits, "seeds": seeds, "metric": f"validation mAP@{k}",
              "base_config": {k_: v for k_, v in base.items() if k_ != "seed"}, "rows": rows}
    atomic_write_json(folder / "ablation.json", report)
    lines = [f"# CFRH ablation · {dataset} · {bits} bits", "",
             f"Validation mAP@{k} (val queries against the training rows; the test queries are never scored), "
             f"mean over seeds {', '.join(map(str, seeds))} ± std; Δ against the full model.", "",
             "| variant | I→T | T→I | mean | Δ |", "|---|---:|---:|---:|---:|"]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['i2t_mean']:.4f} | {row['t2i_mean']:.4f} | {row['mean_mean']:.4f} ± "
                     f"{row['std']:.4f} | {row['delta']:+.4f} |")
    atomic_write_text(folder / "ablation.md", "\n".join(lines) + "\n")
    report["markdown"] = str(folder / "ablation.md")
    return report
