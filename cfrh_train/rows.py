"""The rows of the comparison table, from run folders and the published figures: one block per
metric × dataset × split, our rows as mean ± std over seeds with the best of each column
marked and a paired significance test against it, then the published rows of that metric.

A block holds exactly one metric: its cells are read from ``metrics[direction][metric]`` of our
runs and from the published rows whose ``metric`` column equals it, so mAP@50 and mAP@all can
never share a column. Published rows come from ``reference/published_map.csv`` (a copy of the
team's reference file), never typed in, and are labelled with their backbone. ``table`` renders
the blocks; ``plots`` draws the same figures.
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

from cfrh.errors import DataError
from cfrh_train.results import DIRECTIONS, group_runs, row_name

METRICS = {"map@50": "mAP@50", "map@all": "mAP@all"}  # the published tables' metrics; a run's topk adds its own


def metric_label(metric: str) -> str:
    return METRICS.get(metric) or metric.replace("map", "mAP")


def metrics_of(results: list[dict]) -> list[str]:
    """mAP@k for every k the runs were selected with (``topk``), then mAP@all: one block each."""
    ks = sorted({r.get("config", {}).get("topk", 50) for r in results})
    return [f"map@{k}" for k in ks] + ["map@all"]
PUBLISHED = Path(__file__).parent / "reference" / "published_map.csv"
PUBLISHED_COLUMNS = ("method", "dataset", "direction", "bits", "map", "metric", "image_backbone", "source")
PUBLISHED_PROTOCOL = {"map@50": "DJSRH protocol (2,000 queries, 5,000 train; WIKI 693 queries)",
                      "map@all": "UCCH protocol (frozen VGG-19, last 2,000/2,100/5,000 rows as queries; "
                                 "its COCO is the 122,218-pair Doc2Vec version)"}


def read_published(path: str | Path = PUBLISHED) -> list[dict]:
    """The published figures, checked: a bad row names the file, the line and the column."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {'a folder' if path.is_dir() else 'no such file'}; --published expects the CSV "
                        "of published figures")
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = set(PUBLISHED_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{path}: missing columns {sorted(missing)}; expected {', '.join(PUBLISHED_COLUMNS)}")
        for line, row in enumerate(reader, start=2):
            try:
                direction = row["direction"].strip().lower()
                if direction not in DIRECTIONS:
                    raise ValueError(f"direction {row['direction']!r} is not I2T or T2I")
                rows.append({**row, "direction": direction, "bits": int(row["bits"]), "map": float(row["map"]),
                             "metric": row["metric"].strip()})
            except (ValueError, TypeError) as exc:
                raise DataError(f"{path}, line {line}: {exc}") from exc
    return rows


@dataclass
class Cell:
    mean: float
    std: float | None = None  # None: a published figure, or a single seed
    n: int = 1
    p: float | None = None  # paired test of the column's best row against this one (None: not tested)


SIGNIFICANCE = 0.05
SIGNIFICANCE_NOTE = ("†: the best row's lead over this one is not significant (two-sided Wilcoxon signed-rank test "
                     f"on per-query AP, paired over test queries with the seeds pooled, p ≥ {SIGNIFICANCE})")


def paired_p(best: list[np.ndarray], other: list[np.ndarray]) -> float | None:
    """Two-sided Wilcoxon signed-rank p of paired per-query APs, the seeds' pairs pooled; None
    when there is nothing to test (no pairs, or every difference zero)."""
    a, b = np.concatenate(best) if best else np.zeros(0), np.concatenate(other) if other else np.zeros(0)
    if a.size == 0 or a.size != b.size or np.all(a == b):
        return None
    return float(wilcoxon(a, b, zero_method="wilcox", alternative="two-sided").pvalue)


def _per_query(run: dict, direction: str, metric: str) -> np.ndarray | None:
    path = Path(run.get("_folder", "")) / "per_query.npz"
    if not path.is_file():
        return None
    return _per_query_file(str(path), path.stat().st_mtime_ns).get(f"{direction}_{metric.replace('map', 'ap')}")


@lru_cache(maxsize=512)
def _per_query_file(path: str, mtime_ns: int) -> dict[str, np.ndarray]:
    """A run's per-query AP, read once however many cells and tests ask (a rewritten file is read again)."""
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


@dataclass
class Row:
    label: str
    published: bool
    cells: dict[tuple[str, int], Cell]
    best: set = field(default_factory=set)  # columns where this row is the best of ours


@dataclass
class Block:
    metric: str
    dataset: str
    protocol: str
    columns: list[tuple[str, int]]
    rows: list[Row]
    sources: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def budget(self) -> str:
        """What "tuned" means in this block: the study's budget, the same for every method."""
        trials = sorted({int(label.split("tuned (")[1].split(" ")[0]) for label in (r.label for r in self.rows)
                         if "tuned (" in label})
        if not trials:
            return ""
        return (f"Tuned rows: each method's best config of a study of exactly {', '.join(map(str, trials))} trials "
                "(Optuna TPE, median pruning) on the validation split, the same budget for every method; the test "
                "queries scored once per chosen config. Default rows: the configs' defaults.")

    @property
    def tested(self) -> bool:
        """Whether any of our cells carries a paired test (then the block says what † means)."""
        return any(c.p is not None for row in self.rows for c in row.cells.values())

    @property
    def title(self) -> str:
        return f"{metric_label(self.metric)} · {self.dataset} · our split: {self.protocol}"


def backed_value(run: dict, direction: str, metric: str) -> float | None:
    """A run's figure, as its per-query AP (``per_query.npz``) gives it: a ``result.json`` whose
    figure is not a number, or disagrees with the per-query values it was computed from, is refused
    (the file, the metric, both values) rather than shown."""
    value = run["metrics"][direction].get(metric)
    if value is None:
        return None
    where = f"{Path(run.get('_folder', '.')) / 'result.json'}: metrics.{direction}.{metric}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise DataError(f"{where} is {value!r}, not a number; train the run again (delete its folder)")
    per_query = _per_query(run, direction, metric)
    if per_query is None:
        return float(value)
    backed = float(np.mean(per_query))
    if not np.isclose(backed, value, rtol=1e-9, atol=1e-12):
        raise DataError(f"{where} = {value!r}, but its per_query.npz gives {backed!r}; the record was changed "
                        "after training: train the run again (delete its folder)")
    return backed


def our_rows(runs: list[dict], metric: str, columns: list[tuple[str, int]]) -> tuple[list[Row], list[str]]:
    """Mean ± std over seeds per method (and backbone, where several); re-ranked rows and their cost."""
    values: dict[str, dict[tuple[str, int], list[float]]] = {}
    cost: dict[str, list[tuple[float, float]]] = {}
    for r in runs:
        label = row_name(r, runs)
        for d in DIRECTIONS:
            value = backed_value(r, d, metric)
            if value is not None:
                values.setdefault(label, {}).setdefault((d, r["bits"]), []).append(value)
        rr = r.get("rerank")  # written by `cfrh-search RUN --evaluate-rerank R`: the same metric, re-ranked
        if rr and metric == f"map@{rr['k']}":
            rr_label = f"{label} + re-rank top-{rr['candidates']}"
            for d in DIRECTIONS:
                values.setdefault(rr_label, {}).setdefault((d, r["bits"]), []).append(rr[d][f"{metric}_reranked"])
                cost.setdefault(rr_label, []).append((rr[d]["ms_per_query_hamming"], rr[d]["ms_per_query_reranked"]))
    rows = [Row(label, False, {col: Cell(statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else None, len(v))
                               for col, v in cells.items()})
            for label, cells in values.items()]
    for col in columns:
        scored = [row for row in rows if col in row.cells]
        if scored:
            best = max(scored, key=lambda row: row.cells[col].mean)
            best.best.add(col)
            _mark_significance(best, scored, col, runs, metric)
    notes = [f"{label}: {statistics.fmean(c[1] for c in v):.2f} ms per query, against "
             f"{statistics.fmean(c[0] for c in v):.2f} ms for the Hamming ranking alone" for label, v in cost.items()]
    return rows, notes


def _mark_significance(best: Row, rows: list[Row], col: tuple[str, int], runs: list[dict], metric: str) -> None:
    """p of the best row against each other row of one column, pairing queries seed by seed."""
    direction, bits = col
    by = lambda label: {r["seed"]: r for r in runs if row_name(r, runs) == label and r["bits"] == bits}
    best_runs = by(best.label)
    for row in rows:
        if row is best or "re-rank" in row.label:
            continue
        theirs = by(row.label)
        pairs = [(_per_query(best_runs[s], direction, metric), _per_query(theirs[s], direction, metric))
                 for s in sorted(set(best_runs) & set(theirs))]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None and a.shape == b.shape]
        if pairs:
            row.cells[col].p = paired_p([a for a, _ in pairs], [b for _, b in pairs])


def _published_rows(published: list[dict], metric: str, dataset: str,
                    columns: list[tuple[str, int]]) -> tuple[list[Row], list[str]]:
    """The CSV's figures for this metric and dataset, one row per method and backbone, and their sources."""
    rows: dict[str, Row] = {}
    sources: list[str] = []
    for p in published:
        if p["metric"] != metric or p["dataset"] != dataset or (p["direction"], p["bits"]) not in columns:
            continue
        label = f"{p['method']} · published · {p['image_backbone']}"
        rows.setdefault(label, Row(label, True, {})).cells[(p["direction"], p["bits"])] = Cell(p["map"])
        if p["source"] not in sources:
            sources.append(p["source"])
    return list(rows.values()), sources


def build_blocks(results: list[dict], published: list[dict], metrics: list[str] | None = None) -> list[Block]:
    """One block per metric, dataset and split: our rows, then the published rows of that metric."""
    blocks = []
    for metric in metrics or metrics_of(results):
        for (dataset, protocol), runs in group_runs(results).items():
            columns = [(d, b) for d in DIRECTIONS for b in sorted({r["bits"] for r in runs})]
            ours, notes = our_rows(runs, metric, columns)
            theirs, sources = _published_rows(published, metric, dataset, columns)
            if ours:
                blocks.append(Block(metric, dataset, protocol, columns, ours + theirs, sources, notes))
    return blocks
