"""``cfrh-cache``: a thin Typer layer over the library (synth, features, info, verify)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cfrh_cache.encode import WeightsUnavailable
from cfrh_cache.matfile import DataError
from cfrh_cache.readers import READERS
from cfrh_cache.store import CacheError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True, soft_wrap=True)
USER_ERRORS = (DataError, CacheError, WeightsUnavailable, FloatingPointError, ValueError)


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(2)


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def synth(out: Annotated[Path, typer.Option(help="folder to write the demo dataset into")],
          n: Annotated[int, typer.Option(help="number of image–text pairs")] = 3000,
          labels: Annotated[int, typer.Option(help="number of labels (visual concepts)")] = 12,
          seed: int = 0,
          size: Annotated[int, typer.Option(help="image side in pixels")] = 224) -> None:
    """Write the offline demo dataset (MIRFlickr .mat trio + manifest.csv with JPEGs)."""
    from cfrh_cache.readers.synth import make_synth
    try:
        path = make_synth(out, n=n, n_labels=labels, seed=seed, size=size)
    except USER_ERRORS as exc:
        _fail(exc)
    console.print(f"wrote {n} synthetic pairs with {labels} labels to [bold]{path}[/] "
                  f"(mirflickr/*.mat and manifest.csv)")


@app.command()
def features(
    dataset: Annotated[str, typer.Argument(help=f"one of: {', '.join(READERS)}")],
    root: Annotated[Path, typer.Option(help="the dataset's folder (manifest: the file or its folder)")],
    cache_dir: Annotated[Path, typer.Option(help="cache root; the store goes to CACHE_DIR/DATASET")] = Path("cache"),
    model: Annotated[str, typer.Option(help="open_clip architecture")] = "ViT-B-32",
    pretrained: Annotated[str, typer.Option(help="open_clip tag, local weights file, or 'none'")] = "openai",
    batch_size: int = 256,
    workers: Annotated[int, typer.Option(help="DataLoader workers decoding/resizing images")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N")] = "auto",
    protocol: Annotated[str, typer.Option(help="split protocol: djsrh or ucch")] = "djsrh",
    seed: Annotated[int, typer.Option(help="split seed (and init seed of a random encoder)")] = 0,
    vocab_size: Annotated[int, typer.Option(help="vocabulary size for datasets with raw text")] = 2000,
    min_df: Annotated[int, typer.Option(help="drop words found in fewer texts")] = 2,
    resplit: Annotated[bool, typer.Option(help="replace a stored split of another protocol/seed")] = False,
    chunk_rows: Annotated[int, typer.Option(help="rows per Zarr chunk (the unit of resumption and of ranks)")] = 1024,
    max_chunks: Annotated[int | None, typer.Option(hidden=True)] = None,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Stage 1: read DATASET, encode its images once, write texts, labels, split and features."""
    from cfrh_cache.distributed import distributed_context
    from cfrh_cache.pipeline import build_features
    try:
        with distributed_context(device) as (rank, ranks, barrier, dev):
            report = build_features(dataset, root, cache_dir, model, pretrained, batch_size, workers, dev, protocol,
                                    seed, vocab_size, min_df, resplit, chunk_rows=chunk_rows, progress=progress,
                                    rank=rank, ranks=ranks, barrier=barrier, max_chunks=max_chunks)
    except USER_ERRORS as exc:
        _fail(exc)
    if rank != 0:
        return
    stats = report.stats.as_dict()
    if stats["skipped"]:
        console.print(f"image/{report.encoder_tag}: already complete, nothing to encode")
    else:
        console.print(f"encoded {stats['images']} images at {stats['images_per_s']} img/s "
                      f"(read {stats['share']['read_s']:.0%}, encode {stats['share']['encode_s']:.0%}, "
                      f"write {stats['share']['write_s']:.0%})")
    for note in report.notes:
        console.print(f"  · {note}")
    console.print(f"cache: [bold]{report.cache}[/] (wrote: {', '.join(report.written) or 'nothing new'})")


@app.command()
def info(path: Annotated[Path, typer.Argument(help="a dataset cache, e.g. cache/synth")],
         as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Summary of a cache: arrays, encoders, split, vocabulary, sources."""
    from cfrh_cache.verify import info as cache_info
    try:
        summary = cache_info(path)
    except USER_ERRORS as exc:
        _fail(exc)
    if as_json:
        print(json.dumps(summary, indent=1))
        return
    out = Console()
    out.print(f"[bold]{summary['dataset']}[/] n={summary['n']} at {summary['path']} "
              f"(cfrh {summary['cfrh_version']}, created {summary['created']})")
    table = Table("array", "shape", "dtype", "complete")
    for name, a in summary["arrays"].items():
        table.add_row(name, "×".join(map(str, a["shape"])), a["dtype"], "yes" if a["complete"] else "[red]no[/]")
    out.print(table)
    for tag, enc in summary["encoders"].items():
        warning = f" [yellow]{enc['warning']}[/]" if "warning" in enc else ""
        out.print(f"encoder {tag}: dim {enc.get('dim')}, {enc.get('encode_stats', {}).get('images_per_s')} img/s"
                  f" on {enc.get('device')}{warning}")
    if summary["split"]:
        s = summary["split"]
        out.print(f"split {s['protocol']} seed {s['seed']}: query {s['n_query']}, database {s['n_database']}, "
                  f"train {s['n_train']}, val {s['n_val']}" + "".join(f"\n  · {x}" for x in s["notes"]))
    if summary["vocabulary"]:
        out.print(f"vocabulary: {summary['vocabulary']}")


@app.command()
def verify(path: Annotated[Path, typer.Argument(help="a dataset cache, e.g. cache/synth")],
           sources: Annotated[bool, typer.Option(help="also re-hash the source files")] = False) -> None:
    """Re-check completeness, shapes, split rules and checksums; exit 1 on any problem."""
    from cfrh_cache.verify import verify as cache_verify
    try:
        problems = cache_verify(path, sources)
    except USER_ERRORS as exc:
        _fail(exc)
    if problems:
        for p in problems:
            console.print(f"[red]✗[/] {p}")
        raise typer.Exit(1)
    Console().print(f"[green]✓[/] {path}: complete, consistent, checksums match")
