"""``cfrh-train``: a thin Typer layer over ``cfrh_train.train``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cfrh_cache.store import CacheError
from cfrh_train.config import ConfigError, load, parse_set

console = Console(soft_wrap=True)


def train_command(
    dataset: Annotated[str, typer.Option(help="cached dataset under --cache-dir")] = "synth",
    bits: Annotated[int | None, typer.Option(help="code length K")] = None,
    method: Annotated[str | None, typer.Option(help="cfrh, lsh or random")] = None,
    seed: Annotated[int | None, typer.Option(help="training seed")] = None,
    config: Annotated[Path | None, typer.Option(help="JSON config overriding the dataset's defaults")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    encoder: Annotated[str | None, typer.Option(help="image/<tag> array to use when the cache has several")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda")] = None,
    cache_dir: Annotated[Path, typer.Option()] = Path("cache"),
    runs_dir: Annotated[Path, typer.Option()] = Path("runs"),
    set_: Annotated[list[str], typer.Option("--set", help="override any config key: --set phi=0.2")] = [],
    progress: Annotated[bool, typer.Option(help="show the progress bar")] = True,
) -> None:
    """Train on cached features, select on validation, evaluate the queries once, write the run folder."""
    from cfrh_train.train import run_dir, train, write_run
    try:
        overrides = parse_set(set_)
        for key, value in (("bits", bits), ("method", method), ("seed", seed), ("epochs", epochs),
                           ("encoder", encoder), ("device", device)):
            if value is not None:
                overrides[key] = value
        cfg = load(dataset, config, overrides)
        ckpt = run_dir(runs_dir, {"dataset": dataset, **cfg}) / "checkpoint.pt"
        out = train(cfg, cache_dir, dataset, progress=progress, checkpoint=ckpt)
    except (ConfigError, CacheError, FloatingPointError, ValueError) as exc:
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2)
    folder = write_run(out, runs_dir)
    ckpt.unlink(missing_ok=True)  # the run is complete: result.json and codes replace it
    print_summary(out["result"], folder)


def print_summary(result: dict, folder: Path) -> None:
    k = result["config"]["topk"]
    table = Table(title=f"{result['method']} · {result['dataset']} · {result['bits']} bits · seed {result['seed']}")
    for col in ("direction", f"mAP@{k}", "mAP@all", f"mAP@{k} tie-avg", "P@100"):
        table.add_column(col, justify="right")
    for d in ("i2t", "t2i"):
        m = result["metrics"][d]
        table.add_row(d.upper().replace("2", "→"), f"{m[f'map@{k}']:.4f}", f"{m['map@all']:.4f}",
                      f"{m[f'map@{k}_tie_avg']:.4f}", f"{m['p@k'].get('100', float('nan')):.4f}")
    console.print(table)
    p, sel = result["protocol"], result["selection"]
    console.print(f"protocol {p['name']} seed {p['seed']}: {p['n_query']} queries, {p['n_database']} database, "
                  f"{p['n_train']} train, {p['n_val']} val · encoder {result['encoder']['tag']} · "
                  f"selected epoch {sel['epoch']} on val · train {result['timing']['train_s']:.1f}s, "
                  f"eval {result['timing']['eval_s']:.1f}s")
    if result["encoder"].get("warning"):
        console.print(f"[yellow]{result['encoder']['warning']}[/]")
    console.print(f"run folder: [bold]{folder}[/]")


def main() -> None:
    typer.run(train_command)
