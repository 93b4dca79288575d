"""Figures (matplotlib, PNG): one run's PR curve, and the comparisons ``make table`` draws."""

from __future__ import annotations

from pathlib import Path

DIRECTIONS = ("i2t", "t2i")


def arrow(direction: str) -> str:
    return direction.upper().replace("2", "→")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_pr(curves: dict, path: Path, title: str) -> None:
    """One run: precision against recall over Hamming radius 0…K, both directions."""
    plt = _pyplot()
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
    plt = _pyplot()
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
    plt = _pyplot()
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
