"""Figures (matplotlib, PNG): one run's PR curve, and the comparisons ``make table`` draws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cfrh.mpl import pyplot
from cfrh_train.results import DIRECTIONS, arrow, group_runs, row_name
from cfrh_train.rows import metric_label, our_rows


def plot_pr(curves: dict, path: Path, title: str) -> None:
    """One run: precision against recall over Hamming radius 0…K, both directions."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for direction, curve in curves.items():
        ax.plot(curve["recall"], curve["precision"], marker="o", ms=3, label=arrow(direction))
    ax.set(xlabel="recall", ylabel="precision", title=f"{title}\n(Hamming radius 0…K)", xlim=(0, 1.02), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_pr_comparison(curves: dict[str, dict], path: Path, title: str) -> None:
    """Several methods at one dataset and bit length: ``curves[method][direction]`` → recall/precision."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharey=True)
    for ax, direction in zip(axes, DIRECTIONS):
        for method, by_direction in curves.items():
            c = by_direction[direction]
            ax.plot(c["recall"], c["precision"], marker="o", ms=2.5, label=method)
        ax.set(xlabel="recall", title=arrow(direction), xlim=(0, 1.02), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("precision")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"{title} (Hamming radius 0…K, mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_map_vs_bits(series: dict[str, dict], path: Path, title: str, metric: str) -> None:
    """``series[method][direction]`` → (bits, mean, std) lists: mAP against code length."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharey=True)
    for ax, direction in zip(axes, DIRECTIONS):
        for method, by_direction in series.items():
            bits, mean, std = by_direction[direction]
            ax.errorbar(bits, mean, yerr=std, marker="o", ms=4, capsize=3, label=method)
        ax.set(xscale="log", xlabel="bits", title=arrow(direction))
        ax.set_xticks(sorted({b for s in series.values() for b in s[DIRECTIONS[0]][0]}))
        ax.get_xaxis().set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{metric} (mean ± std over seeds)")
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def draw_figures(results: list[dict], out_dir: Path, metric: str = "map@50") -> list[Path]:
    """A PR-curve comparison per dataset and bit length, and mAP against bits per dataset."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for (dataset, protocol), runs in group_runs(results).items():
        name = f"{dataset}-{runs[0]['protocol']['name']}-s{runs[0]['protocol']['seed']}"
        labels = list(dict.fromkeys(row_name(r, runs) for r in runs))
        bits_all = sorted({r["bits"] for r in runs})
        for bits in bits_all:
            curves: dict[str, dict] = {}
            for label in labels:
                files = [Path(r["_folder"]) / "pr_curve.json" for r in runs if row_name(r, runs) == label and r["bits"] == bits]
                loaded = [json.loads(f.read_text()) for f in files if f.is_file()]
                if loaded:
                    curves[label] = {d: {k: np.mean([c[d][k] for c in loaded], 0).tolist() for k in ("precision", "recall")}
                                     for d in DIRECTIONS}
            if curves:
                path = out_dir / f"{name}_{bits}bit_pr.png"
                plot_pr_comparison(curves, path, f"{dataset} · {bits} bits · {protocol}")
                paths.append(path)
        rows, _ = our_rows(runs, metric, [(d, b) for d in DIRECTIONS for b in bits_all])  # the table's own figures
        series = {}
        for row in rows:
            series[row.label] = {}
            for d in DIRECTIONS:
                cells = [(b, row.cells[(d, b)]) for b in bits_all if (d, b) in row.cells]
                series[row.label][d] = ([b for b, _ in cells], [c.mean for _, c in cells], [c.std or 0.0 for _, c in cells])
        if series:
            path = out_dir / f"{name}_{metric.replace('@', '')}_vs_bits.png"
            plot_map_vs_bits(series, path, f"{dataset} · {protocol}", metric_label(metric))
            paths.append(path)
    return paths
