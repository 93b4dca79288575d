"""``make table``: our methods beside the published figures, in the paper layout.

runs/…/result.json ──► blocks (one metric × dataset × protocol) ──► table.md, table.tex, rich
                   └─► figures: PR curves per dataset and bit length, mAP against bits

A block holds exactly one metric: its cells are read from ``metrics[direction][metric]`` of our
runs and from the published rows whose ``metric`` column equals it, so mAP@50 and mAP@all can
never share a column. Our rows are mean ± std over seeds; the best of them is bold per column.
Published rows come from ``reference/published_map.csv`` (a copy of the team's reference file),
never typed in, and are labelled with their backbone.
"""

from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from cfrh.errors import CacheError, DataError
from cfrh_train.plots import DIRECTIONS, arrow, plot_map_vs_bits, plot_pr_comparison

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


# -- inputs ------------------------------------------------------------------------------------
def read_published(path: str | Path = PUBLISHED) -> list[dict]:
    """The published figures, checked: a bad row names the file, the line and the column."""
    path = Path(path)
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


def collect_runs(runs_dir: str | Path) -> list[dict]:
    """Every finished run (a run folder with result.json) under ``runs_dir``, with its folder.

    A run trained with the encoder named (``seed0-<encoder>``) and one with the cache's only
    encoder left implicit (``seed0``) are the same experiment: the newer one counts, once.
    """
    from cfrh_train.results import read_result
    latest: dict[tuple, dict] = {}
    for path in sorted(Path(runs_dir).glob("*/*/*bit/seed*/result.json"), key=lambda p: p.stat().st_mtime):
        result = read_result(path)
        result["_folder"] = str(path.parent)
        p = result["protocol"]
        key = (result["dataset"], result["method"], result["bits"], result["seed"], result["encoder"]["tag"],
               p["name"], p["seed"])
        latest[key] = result
    return list(latest.values())


def cached_datasets(cache_dir: str | Path) -> list[str]:
    """Datasets under ``cache_dir`` that have complete image features."""
    from cfrh.errors import CacheError
    from cfrh_cache.store import Cache
    names = []
    for group in sorted(Path(cache_dir).glob("*/zarr.json")):
        try:
            if Cache.open(group.parent).encoders():
                names.append(group.parent.name)
        except CacheError:
            continue
    return names


def ensure_runs(datasets: list[str], methods: list[str], bits: list[int], seeds: list[int], cache_dir: str | Path,
                runs_dir: str | Path, device: str = "auto", progress: bool = True, log=print,
                encoders: list[str | None] = (None,), rerank: int = 0) -> dict[str, int]:
    """Train what is missing or stale; reuse finished run folders keyed by their config.
    ``encoders``: image arrays of the cache to compare (None: the cache's only one).
    ``rerank``: also score re-ranking of the Hamming top-R (runs need their search index)."""
    from itertools import product

    from cfrh_cache.store import Cache
    from cfrh_train.config import load
    from cfrh_train.data import choose_encoder, data_inputs
    from cfrh_train.results import inputs, read_result, same_inputs
    from cfrh_train.train import run, run_dir
    counts = {"reused": 0, "trained": 0}
    for dataset in datasets:
        cache = Cache.open(Path(cache_dir) / dataset)
        for encoder, method, b, seed in product(encoders, methods, bits, seeds):
            config = load(dataset, None, {"method": method, "bits": b, "seed": seed, "device": device,
                                          "encoder": encoder})
            folder = run_dir(runs_dir, dataset, config)
            same, why = same_inputs(folder, inputs(config, data_inputs(cache, choose_encoder(cache, encoder))))
            if same and (not rerank or (folder / "index" / "index.json").is_file()):
                counts["reused"] += 1
            else:
                if (folder / "result.json").exists():
                    log(f"not reused: {why}")
                log(f"training {method} on {dataset}{f' [{encoder}]' if encoder else ''}, {b} bits, seed {seed}")
                run(config, cache_dir, dataset, runs_dir, progress=progress, export=bool(rerank))
                counts["trained"] += 1
            if rerank and read_result(folder).get("rerank", {}).get("candidates") != rerank:
                from cfrh_train.search import record_rerank
                record_rerank(folder, rerank)
    return counts


# -- the table ---------------------------------------------------------------------------------
@dataclass
class Cell:
    mean: float
    std: float | None = None  # None: a published figure, or a single seed
    n: int = 1


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
    def title(self) -> str:
        return f"{metric_label(self.metric)} · {self.dataset} · our split: {self.protocol}"


def _group(results: list[dict]) -> dict[tuple[str, str], list[dict]]:
    from cfrh_train.methods import METHODS
    rank = {name: i for i, name in enumerate(METHODS)}  # CFRH first, then the peers, then the floors
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in sorted(results, key=lambda r: (rank.get(r["method"], len(rank)), r["method"], r["bits"], r["seed"])):
        p = r["protocol"]
        groups.setdefault((r["dataset"], f"{p['name']} (seed {p['seed']})"), []).append(r)
    return groups


def _row_name(run: dict, runs: list[dict]) -> str:
    """A row's name: the method, with its backbone where the runs use several."""
    several = len({r["encoder"]["tag"] for r in runs}) > 1
    return f"{run['method']} [{run['encoder']['tag']}]" if several else run["method"]


def _our_rows(runs: list[dict], metric: str, columns: list[tuple[str, int]]) -> tuple[list[Row], list[str]]:
    """Mean ± std over seeds per method (and backbone, where several); re-ranked rows and their cost."""
    values: dict[str, dict[tuple[str, int], list[float]]] = {}
    cost: dict[str, list[tuple[float, float]]] = {}
    for r in runs:
        label = _row_name(r, runs)
        for d in DIRECTIONS:
            if r["metrics"][d].get(metric) is not None:
                values.setdefault(label, {}).setdefault((d, r["bits"]), []).append(r["metrics"][d][metric])
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
            max(scored, key=lambda row: row.cells[col].mean).best.add(col)
    notes = [f"{label}: {statistics.fmean(c[1] for c in v):.2f} ms per query, against "
             f"{statistics.fmean(c[0] for c in v):.2f} ms for the Hamming ranking alone" for label, v in cost.items()]
    return rows, notes


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
        for (dataset, protocol), runs in _group(results).items():
            columns = [(d, b) for d in DIRECTIONS for b in sorted({r["bits"] for r in runs})]
            ours, notes = _our_rows(runs, metric, columns)
            theirs, sources = _published_rows(published, metric, dataset, columns)
            if ours:
                blocks.append(Block(metric, dataset, protocol, columns, ours + theirs, sources, notes))
    return blocks


def fmt(cell: Cell | None) -> str:
    if cell is None:
        return "–"
    return f"{cell.mean:.3f}" if cell.std is None else f"{cell.mean:.3f} ± {cell.std:.3f}"


def _label(row: Row) -> str:
    if row.published:
        return row.label
    n = {c.n for c in row.cells.values()}
    seeds = f"{min(n)}–{max(n)}" if len(n) > 1 else str(n.pop())
    return f"{row.label} ({seeds} seed{'s' if seeds != '1' else ''})"


def protocol_lines(results: list[dict]) -> list[str]:
    """One line per dataset and split: protocol and seed, encoder, sizes and the selection rule."""
    lines = []
    for (dataset, protocol), runs in _group(results).items():
        p = runs[0]["protocol"]
        rule = next((x["selection"]["rule"] for x in runs if x["selection"]["epoch"] is not None), "none (no training)")
        encoders = sorted({_feature_source(x) for x in runs})
        texts = sorted({f"{x.get('text', {}).get('input', 'dataset')} ({x.get('text', {}).get('kind', 'bow')})"
                        for x in runs})
        warn = " (randomly initialised encoder: not comparable with published figures)" if any(
            x["encoder"].get("pretrained") == "none" for x in runs) else ""
        lines.append(f"{dataset}: split {protocol}; image features {', '.join(encoders)}{warn}; text "
                     f"{', '.join(texts)}; {p['n_query']:,} queries, "
                     f"{p['n_database']:,} database items, {p['n_train']:,} training rows, {p['n_val']:,} validation "
                     f"queries; selection: {rule}, on the validation split, never on the queries; "
                     f"runs: {len(runs)}.")
    return lines


def _feature_source(run: dict) -> str:
    """An encoder tag, with the file it came from where the features were imported."""
    origin = run["encoder"].get("origin")
    return run["encoder"]["tag"] + (f" (from {origin.get('file')})" if origin else "")


def render_markdown(blocks: list[Block], protocol: list[str], figures: list[Path], root: Path) -> str:
    out = ["# cfrh results", "", f"_Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `make table`. "
           "Our rows: mean ± std over seeds, best of ours in bold per column. Published rows are other papers' "
           "figures under their own protocol and backbone; mAP@50 and mAP@all are never in one column._"]
    for metric in dict.fromkeys(b.metric for b in blocks):
        mine = [b for b in blocks if b.metric == metric]
        out += ["", f"## {metric_label(metric)}", ""]
        if metric in PUBLISHED_PROTOCOL:
            out.append(f"Published rows: {PUBLISHED_PROTOCOL[metric]}.")
        for b in mine:
            out += ["", f"### {b.title}", "",
                    "| method | " + " | ".join(f"{arrow(d)} {bits}" for d, bits in b.columns) + " |",
                    "|---|" + "---:|" * len(b.columns)]
            for row in b.rows:
                cells = [f"**{fmt(row.cells.get(c))}**" if c in row.best else fmt(row.cells.get(c)) for c in b.columns]
                out.append(f"| {_label(row)} | " + " | ".join(cells) + " |")
            if b.sources:
                out += ["", "Sources: " + "; ".join(b.sources) + "."]
            if b.notes:
                out += ["", "Re-ranking cost: " + "; ".join(b.notes) + "."]
    if figures:
        out += ["", "## Figures", ""] + [f"![{f.stem}]({f.relative_to(root).as_posix()})" for f in figures]
    out += ["", "## Protocol", ""] + [f"- {line}" for line in protocol]
    return "\n".join(out) + "\n"


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("→", r"$\to$"), ("·", r"$\cdot$"), ("–", "--")):
        text = text.replace(a, b)
    return text


def render_latex(blocks: list[Block], protocol: list[str]) -> str:
    out = ["% Generated by `make table` (cfrh). Our rows: mean ± std over seeds, best of ours in bold."]
    for b in blocks:
        out += ["", r"\begin{table}[t]", r"\centering\small", rf"\caption{{{_tex(b.title)}}}",
                r"\begin{tabular}{l" + "r" * len(b.columns) + "}", r"\hline",
                "method & " + " & ".join(_tex(f"{arrow(d)} {bits}") for d, bits in b.columns) + r" \\", r"\hline"]
        for i, row in enumerate(b.rows):
            if row.published and (i == 0 or not b.rows[i - 1].published):
                out.append(r"\hline")
            cells = [rf"\textbf{{{_tex(fmt(row.cells.get(c)))}}}" if c in row.best else _tex(fmt(row.cells.get(c)))
                     for c in b.columns]
            out.append(_tex(_label(row)) + " & " + " & ".join(cells) + r" \\")
        out += [r"\hline", r"\end{tabular}", r"\end{table}"] + [f"% re-ranking cost: {_tex(n)}" for n in b.notes]
    out += ["", "% Protocol"] + [f"% {line}" for line in protocol]
    return "\n".join(out) + "\n"


def rich_tables(blocks: list[Block]):
    from rich.table import Table
    tables = []
    for b in blocks:
        t = Table(title=b.title, title_justify="left", caption="; ".join(b.notes) or None, caption_justify="left")
        t.add_column("method")
        for d, bits in b.columns:
            t.add_column(f"{arrow(d)} {bits}", justify="right")
        for i, row in enumerate(b.rows):
            cells = [f"[bold]{fmt(row.cells.get(c))}[/]" if c in row.best else fmt(row.cells.get(c)) for c in b.columns]
            t.add_row(_label(row), *cells, style="dim" if row.published else None,
                      end_section=not row.published and i + 1 < len(b.rows) and b.rows[i + 1].published)
        tables.append(t)
    return tables


# -- figures -----------------------------------------------------------------------------------
def draw_figures(results: list[dict], out_dir: Path, metric: str = "map@50") -> list[Path]:
    """A PR-curve comparison per dataset and bit length, and mAP against bits per dataset."""
    import numpy as np
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for (dataset, protocol), runs in _group(results).items():
        name = f"{dataset}-{runs[0]['protocol']['name']}-s{runs[0]['protocol']['seed']}"
        labels = list(dict.fromkeys(_row_name(r, runs) for r in runs))
        bits_all = sorted({r["bits"] for r in runs})
        for bits in bits_all:
            curves: dict[str, dict] = {}
            for label in labels:
                files = [Path(r["_folder"]) / "pr_curve.json" for r in runs if _row_name(r, runs) == label and r["bits"] == bits]
                loaded = [json.loads(f.read_text()) for f in files if f.is_file()]
                if loaded:
                    curves[label] = {d: {k: np.mean([c[d][k] for c in loaded], 0).tolist() for k in ("precision", "recall")}
                                     for d in DIRECTIONS}
            if curves:
                path = out_dir / f"{name}_{bits}bit_pr.png"
                plot_pr_comparison(curves, path, f"{dataset} · {bits} bits · {protocol}")
                paths.append(path)
        rows, _ = _our_rows(runs, metric, [(d, b) for d in DIRECTIONS for b in bits_all])  # the table's own figures
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


def make_table(runs_dir: str | Path, published: str | Path = PUBLISHED, figures: bool = True) -> dict:
    """Render every finished run under ``runs_dir``: writes table.md, table.tex and figures/."""
    runs_dir = Path(runs_dir)
    results = collect_runs(runs_dir)
    if not results:
        raise CacheError(f"{runs_dir}: no finished runs (run folders with result.json); train some first")
    blocks = build_blocks(results, read_published(published))
    protocol = protocol_lines(results)
    figure_paths = draw_figures(results, runs_dir / "figures") if figures else []
    (runs_dir / "table.md").write_text(render_markdown(blocks, protocol, figure_paths, runs_dir))
    (runs_dir / "table.tex").write_text(render_latex(blocks, protocol))
    return {"blocks": blocks, "protocol": protocol, "figures": figure_paths, "markdown": runs_dir / "table.md",
            "latex": runs_dir / "table.tex", "n_runs": len(results)}
