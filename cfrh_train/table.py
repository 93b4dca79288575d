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

import numpy as np

from cfrh.errors import CacheError, ConfigError, DataError
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
               p["name"], p["seed"], json.dumps(result.get("variant")))
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
                encoders: list[str | None] = (None,), rerank: int = 0, tuned: int = 0) -> dict[str, int]:
    """Train what is missing or stale; reuse finished run folders made from the same inputs.
    ``encoders``: image arrays of the cache to compare (None: the cache's only one).
    ``rerank``: also score re-ranking of the Hamming top-R (runs need their search index).
    ``tuned``: also rows from each learned method's best config of a study of exactly that many
    trials (``cfrh_train.tune``; run or resumed here), beside the default rows."""
    from itertools import product

    from cfrh_cache.store import Cache
    from cfrh_train.config import load
    from cfrh_train.data import choose_encoder, data_inputs, dense_text
    from cfrh_train.methods import method_class
    from cfrh_train.results import inputs, read_result, same_inputs
    from cfrh_train.train import run, run_dir
    counts = {"reused": 0, "trained": 0}
    for dataset in datasets:
        cache = Cache.open(Path(cache_dir) / dataset)
        for encoder, method, b in product(encoders, methods, bits):
            text = {}
            if method_class(method).needs_dense_text:  # UCMFH: the cache's CLIP text embeddings, or no row
                try:
                    text = {"text": dense_text(cache, method)}
                except ConfigError as exc:
                    log(f"no {method} rows for {dataset}: {exc}")
                    continue
            variants = [(None, None)]
            from cfrh_train.tune import SEARCH, study_dir, tune  # optuna itself is imported by tune() alone
            if tuned and (SEARCH / f"{method}.json").is_file():
                log(f"tuning {method} on {dataset}, {b} bits: a study of {tuned} trials (resumed where it stopped)")
                tune(dataset, method, b, tuned, cache_dir, runs_dir, device=device)
                best = study_dir(runs_dir, dataset, method, b) / "best.json"
                variants.append((best, {"tuned": {"trials": tuned, "study": str(best.parent)}}))
            for (config_file, variant), seed in product(variants, seeds):
                config = load(dataset, config_file, {"method": method, "bits": b, "seed": seed, "device": device,
                                                     "encoder": encoder, **text})
                folder = run_dir(runs_dir, dataset, config, variant)
                wanted = inputs(config, data_inputs(cache, choose_encoder(cache, encoder), config["text"]))
                same, why = same_inputs(folder, wanted)
                if same and (not rerank or (folder / "index" / "index.json").is_file()):
                    counts["reused"] += 1
                else:
                    if (folder / "result.json").exists():
                        log(f"not reused: {why}")
                    log(f"training {method}{' (tuned)' if variant else ''} on {dataset}"
                        f"{f' [{encoder}]' if encoder else ''}, {b} bits, seed {seed}")
                    run(config, cache_dir, dataset, runs_dir, progress=progress, export=bool(rerank), variant=variant)
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
    p: float | None = None  # paired test of the column's best row against this one (None: not tested)


SIGNIFICANCE = 0.05
SIGNIFICANCE_NOTE = ("†: the best row's lead over this one is not significant (two-sided Wilcoxon signed-rank test "
                     f"on per-query AP, paired over test queries with the seeds pooled, p ≥ {SIGNIFICANCE})")


def paired_p(best: list[np.ndarray], other: list[np.ndarray]) -> float | None:
    """Two-sided Wilcoxon signed-rank p of paired per-query APs, the seeds' pairs pooled; None
    when there is nothing to test (no pairs, or every difference zero)."""
    from scipy.stats import wilcoxon
    a, b = np.concatenate(best) if best else np.zeros(0), np.concatenate(other) if other else np.zeros(0)
    if a.size == 0 or a.size != b.size or np.all(a == b):
        return None
    return float(wilcoxon(a, b, zero_method="wilcox", alternative="two-sided").pvalue)


def _per_query(run: dict, direction: str, metric: str) -> np.ndarray | None:
    path = Path(run.get("_folder", "")) / "per_query.npz"
    key = f"{direction}_{metric.replace('map', 'ap')}"
    if not path.is_file():
        return None
    with np.load(path) as data:
        return data[key] if key in data.files else None


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


def _group(results: list[dict]) -> dict[tuple[str, str], list[dict]]:
    from cfrh_train.methods import METHODS
    rank = {name: i for i, name in enumerate(METHODS)}  # CFRH first, then the peers, then the floors
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in sorted(results, key=lambda r: (rank.get(r["method"], len(rank)), r["method"], r["bits"], r["seed"])):
        p = r["protocol"]
        groups.setdefault((r["dataset"], f"{p['name']} (seed {p['seed']})"), []).append(r)
    return groups


def _row_name(run: dict, runs: list[dict]) -> str:
    """A row's name: the method, with its backbone where the runs use several, and "default" or
    "tuned (N trials)" where tuned runs stand beside default ones."""
    several = len({r["encoder"]["tag"] for r in runs}) > 1
    name = f"{run['method']} [{run['encoder']['tag']}]" if several else run["method"]
    if any("tuned" in (r.get("variant") or {}) for r in runs):
        tuned = (run.get("variant") or {}).get("tuned")
        name += f" · tuned ({tuned['trials']} trials)" if tuned else " · default"
    return name


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
            best = max(scored, key=lambda row: row.cells[col].mean)
            best.best.add(col)
            _mark_significance(best, scored, col, runs, metric)
    notes = [f"{label}: {statistics.fmean(c[1] for c in v):.2f} ms per query, against "
             f"{statistics.fmean(c[0] for c in v):.2f} ms for the Hamming ranking alone" for label, v in cost.items()]
    return rows, notes


def _mark_significance(best: Row, rows: list[Row], col: tuple[str, int], runs: list[dict], metric: str) -> None:
    """p of the best row against each other row of one column, pairing queries seed by seed."""
    direction, bits = col
    by = lambda label: {r["seed"]: r for r in runs if _row_name(r, runs) == label and r["bits"] == bits}
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
    text = f"{cell.mean:.3f}" if cell.std is None else f"{cell.mean:.3f} ± {cell.std:.3f}"
    return text + (" †" if cell.p is not None and cell.p >= SIGNIFICANCE else "")


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
            if b.tested:
                out += ["", SIGNIFICANCE_NOTE + "."]
            if b.budget:
                out += ["", b.budget]
    if figures:
        out += ["", "## Figures", ""] + [f"![{f.stem}]({f.relative_to(root).as_posix()})" for f in figures]
    out += ["", "## Protocol", ""] + [f"- {line}" for line in protocol]
    return "\n".join(out) + "\n"


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("→", r"$\to$"), ("·", r"$\cdot$"), ("–", "--"), ("†", r"$^\dagger$"),
                 ("≥", r"$\geq$")):
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
        if b.tested:
            out.append(f"% {_tex(SIGNIFICANCE_NOTE)}")
    out += ["", "% Protocol"] + [f"% {line}" for line in protocol]
    return "\n".join(out) + "\n"


def rich_tables(blocks: list[Block]):
    from rich.table import Table
    tables = []
    for b in blocks:
        caption = "; ".join(b.notes + ([SIGNIFICANCE_NOTE] if b.tested else [])) or None
        t = Table(title=b.title, title_justify="left", caption=caption, caption_justify="left")
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
