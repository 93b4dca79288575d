"""``make table``: render the comparison, in the paper layout, from the run folders alone.

runs/…/result.json ──► blocks (``rows``: one metric × dataset × split) ──► table.md, table.tex, rich
                   └─► figures (``plots``): PR curves per dataset and bit length, mAP against bits

This module reads and renders; what trains and tunes the runs a table asks for is
``missing_runs``. Our rows are mean ± std over seeds; the best of them is bold per column.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

from rich.table import Table

from cfrh.errors import CacheError
from cfrh.fsio import atomic_write_text
from cfrh_train.plots import draw_figures
from cfrh_train.results import UNIFIED, arrow, collect_runs, group_runs, select_runs
from cfrh_train.rows import (
    PUBLISHED,
    PUBLISHED_PROTOCOL,
    SIGNIFICANCE,
    SIGNIFICANCE_NOTE,
    Block,
    Cell,
    Row,
    build_blocks,
    metric_label,
    read_published,
)

UNIFIED_NOTE = (f"Rows marked {UNIFIED}: each database pair is hashed from both its image and its text, as CMFH "
                "and LSSH were published; a query never has both, and every other row hashes each database item "
                "from its own modality, so these rows are not comparable with the others.")


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
    for (dataset, protocol), runs in group_runs(results).items():
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
        if metric in PUBLISHED_PROTOCOL and any(row.published for b in mine for row in b.rows):
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
            if any(UNIFIED in row.label for row in b.rows):
                out += ["", UNIFIED_NOTE]
            if b.budget:
                out += ["", b.budget]
    if figures:
        out += ["", "## Figures", ""] + [f"![{f.stem}]({f.relative_to(root).as_posix()})" for f in figures]
    out += ["", "## Protocol", ""] + [f"- {line}" for line in protocol]
    return "\n".join(out) + "\n"


TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$", "{": r"\{",
       "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
       "±": r"$\pm$", "→": r"$\to$", "·": r"$\cdot$", "–": "--", "†": r"$^\dagger$", "≥": r"$\geq$", "×": r"$\times$",
       "−": "--"}


def _tex(text: str) -> str:
    """Text for LaTeX: every special character escaped, one pass (no escape is escaped again)."""
    return "".join(TEX.get(ch, ch) for ch in text)


def _tex_label(b: Block) -> str:
    return "tab:" + re.sub(r"[^a-z0-9]+", "-", f"{b.metric} {b.dataset} {b.protocol}".lower()).strip("-")


def render_latex(blocks: list[Block], protocol: list[str]) -> str:
    out = ["% Generated by `make table` (cfrh). Our rows: mean ± std over seeds, best of ours in bold.",
           "% Needs \\usepackage{booktabs} in the preamble."]
    for b in blocks:
        out += ["", r"\begin{table}[t]", r"\centering\small", rf"\caption{{{_tex(b.title)}}}",
                rf"\label{{{_tex_label(b)}}}", r"\begin{tabular}{l" + "r" * len(b.columns) + "}", r"\toprule",
                "method & " + " & ".join(_tex(f"{arrow(d)} {bits}") for d, bits in b.columns) + r" \\", r"\midrule"]
        for i, row in enumerate(b.rows):
            if row.published and i > 0 and not b.rows[i - 1].published:
                out.append(r"\midrule")
            cells = [rf"\textbf{{{_tex(fmt(row.cells.get(c)))}}}" if c in row.best else _tex(fmt(row.cells.get(c)))
                     for c in b.columns]
            out.append(_tex(_label(row)) + " & " + " & ".join(cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}"]
        notes = ([SIGNIFICANCE_NOTE] if b.tested else []) + [f"Re-ranking cost: {n}" for n in b.notes]
        notes += [UNIFIED_NOTE] if any(UNIFIED in row.label for row in b.rows) else []
        out += [rf"\par\smallskip\footnotesize {_tex(n)}" for n in notes] + [r"\end{table}"]
    out += ["", "% Protocol"] + [f"% {line}" for line in protocol]
    return "\n".join(out) + "\n"


def rich_tables(blocks: list[Block]) -> list[Table]:
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


def make_table(runs_dir: str | Path, published: str | Path = PUBLISHED, figures: bool = True,
               only: dict[str, list] | None = None, strict: bool = True) -> dict:
    """Render the finished runs under ``runs_dir`` (``only``: those of the named datasets, methods,
    bits and seeds, see ``results.select_runs``; ``strict``: each named one must have runs): writes
    table.md, table.tex and figures/."""
    runs_dir = Path(runs_dir)
    results = collect_runs(runs_dir)
    if not results:
        raise CacheError(f"{runs_dir}: no finished runs (run folders with result.json); train some first")
    results = select_runs(results, strict, **(only or {}))
    blocks = build_blocks(results, read_published(published))
    protocol = protocol_lines(results)
    figure_paths = draw_figures(results, runs_dir / "figures") if figures else []
    atomic_write_text(runs_dir / "table.md", render_markdown(blocks, protocol, figure_paths, runs_dir))
    atomic_write_text(runs_dir / "table.tex", render_latex(blocks, protocol))
    return {"blocks": blocks, "protocol": protocol, "figures": figure_paths, "markdown": runs_dir / "table.md",
            "latex": runs_dir / "table.tex", "n_runs": len(results)}
