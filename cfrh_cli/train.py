"""``cfrh train``, ``cfrh table``, ``cfrh tune`` (aliases ``cfrh-train``, ``cfrh-table``,
``cfrh-tune``): thin Typer layers over ``cfrh_train`` (and, for ``--export`` and ``RERANK``,
``cfrh_search``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cfrh.cliutil import console, err_console, user_errors
from cfrh.errors import CacheError, ConfigError
from cfrh_cli.options import (
    CACHE_DIR,
    DEVICE,
    INDEX,
    RUNS_DIR,
    Bits,
    CachedDataset,
    CacheDir,
    Device,
    IndexParams,
    MaybeBits,
    MaybeMethod,
    Method,
    Progress,
    RunsDir,
    SearchIndex,
    Shards,
    Version,
    seed_option,
    words,
    words_option,
)
from cfrh_train.config import load, parse_set
from cfrh_train.methods import TABLE_METHODS, register

TABLE_BITS, TABLE_SEEDS = ["16", "32", "64", "128"], ["0", "1", "2"]  # what `make table` trains unless told


def choose_dataset(dataset: str | None, cache_dir: Path) -> str:
    """``--dataset``, or the one dataset the cache root holds (said on stderr); several or none: refused."""
    from cfrh_train.data import cached_datasets
    if dataset is not None:
        return dataset
    names = cached_datasets(cache_dir)
    if len(names) == 1:
        err_console.print(f"dataset: {names[0]} (the only one in {cache_dir})")
        return names[0]
    if not names:
        raise CacheError(f"{cache_dir}: no cached dataset; run `make features DATASET=…` (or `make demo`) first, "
                         "or point --cache-dir at your cache")
    raise ConfigError(f"--dataset: {cache_dir} holds several datasets ({', '.join(names)}); name one")


@user_errors
def train_command(
    dataset: CachedDataset = None,
    bits: MaybeBits = None,
    method: MaybeMethod = None,
    seed: seed_option("training (weights, batches)", optional=True) = None,
    config: Annotated[Path | None, typer.Option(help="JSON config overriding the dataset's defaults")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="training epochs")] = None,
    encoder: Annotated[str | None, typer.Option(help="image/<tag> array to use when the cache has several")] = None,
    text: Annotated[str | None, typer.Option(help="text input: bow (the dataset's own text) or a text encoder's "
                                                  "tag, e.g. ViT-B-32__openai (cfrh-cache features --text-encoder)")] = None,
    device: Device = DEVICE,
    cache_dir: CacheDir = CACHE_DIR,
    runs_dir: RunsDir = RUNS_DIR,
    set_: Annotated[list[str], typer.Option("--set", help="override any config key: --set phi=0.2 (repeat it)")] = [],
    progress: Progress = True,
    export: Annotated[bool, typer.Option(help="also write <run>/index/ for cfrh-search")] = False,
    index: SearchIndex = INDEX,
    index_param: IndexParams = [],
    shards: Shards = 1,
    version: Version = False,
) -> None:
    """Train on cached features, select on validation, evaluate the queries once, write the run folder."""
    from cfrh_search import ann
    from cfrh_search.index import IndexSpec, export_index
    from cfrh_train.results import read_result
    from cfrh_train.train import run
    dataset = choose_dataset(dataset, cache_dir)
    overrides = parse_set(set_)
    for key, value in (("bits", bits), ("method", method), ("seed", seed), ("epochs", epochs),
                       ("encoder", encoder), ("text", None if text == "bow" else text), ("device", device)):
        if value is not None:
            overrides[key] = value
    params = parse_set(index_param)
    ann.check_params(index.value, params)  # before training, not after it
    folder = run(load(dataset, config, overrides), cache_dir, dataset, runs_dir, progress=progress)
    if export:
        export_index(folder, cache_dir, IndexSpec(index.value, params, shards))
    print_summary(read_result(folder), folder)


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
    epoch = "none (no training)" if sel["epoch"] is None else f"{sel['epoch'] + 1} of {result['config']['epochs']}"
    console.print(f"protocol {p['name']} seed {p['seed']}: {p['n_query']} queries, {p['n_database']} database, "
                  f"{p['n_train']} train, {p['n_val']} val · encoder {result['encoder']['tag']} · "
                  f"selected epoch {epoch} on val · train {result['timing']['train_s']:.1f}s, "
                  f"eval {result['timing']['eval_s']:.1f}s")
    if result["encoder"].get("warning"):
        console.print(f"[yellow]{result['encoder']['warning']}[/]")
    console.print(f"run folder: [bold]{folder}[/]")


@user_errors
def table_command(
    datasets: words_option("datasets to train and show (default: every cached dataset)") = [],
    bits: words_option(f"code lengths (default: {' '.join(TABLE_BITS)} to train; with --no-train, every one "
                       "there is)") = [],
    seeds: words_option(f"training seeds, rows show mean ± std over them (default: {' '.join(TABLE_SEEDS)} to "
                        "train; with --no-train, every one there is)") = [],
    methods: words_option(f"methods (default: {' '.join(TABLE_METHODS)})") = [],
    encoders: words_option("image arrays of the cache to compare, e.g. 'ViT-B-32__openai ViT-L-14__openai' "
                           "(default: the cache's only one)") = [],
    device: Device = DEVICE,
    cache_dir: CacheDir = CACHE_DIR,
    runs_dir: RunsDir = RUNS_DIR,
    train: Annotated[bool, typer.Option(help="train missing runs; --no-train renders what is there")] = True,
    published: Annotated[Path | None, typer.Option(help="published figures CSV (default: the bundled copy)")] = None,
    rerank: Annotated[int, typer.Option(min=0, help="also score re-ranking of the Hamming top-R (0: off); "
                                             "the runs are exported for it")] = 0,
    tuned: Annotated[int, typer.Option(min=0, help="also rows from each method's best config of a study of "
                                                  "exactly N trials on the validation split (0: off)")] = 0,
    examples: Annotated[int, typer.Option(min=0, help="also draw N test queries (chosen by seed) with each "
                                                     "method's top hits, as PNG and PDF (0: off)")] = 0,
    examples_seed: seed_option("the choice of example queries") = 0,
    progress: Progress = True,
    version: Version = False,
) -> None:
    """Train what is missing (a finished run is reused only when made from the same inputs), then write
    runs/table.md, runs/table.tex and runs/figures/, and print the table."""
    from cfrh_search.examples import example_figures
    from cfrh_search.index import export_index
    from cfrh_search.rerank import record_rerank
    from cfrh_train.data import cached_datasets
    from cfrh_train.missing_runs import ensure_runs
    from cfrh_train.results import collect_runs, has_index, read_result
    from cfrh_train.rows import PUBLISHED
    from cfrh_train.table import make_table, rich_tables
    names = [register(m) for m in words(methods)] or TABLE_METHODS  # a user's FILE.py:Class joins by its name
    bit_list, seed_list = words(bits, int, "--bits"), words(seeds, int, "--seeds")
    if train:
        sets = words(datasets) or cached_datasets(cache_dir)
        if not sets:
            raise CacheError(f"{cache_dir}: no cached dataset; run `make features` (or `make demo`) first")
        def export_and_rerank(folder: Path) -> None:
            if not has_index(folder):
                export_index(folder, cache_dir)
            if read_result(folder).get("rerank", {}).get("candidates") != rerank:
                record_rerank(folder, rerank, device)

        counts = ensure_runs(sets, names, bit_list or list(map(int, TABLE_BITS)),
                             seed_list or list(map(int, TABLE_SEEDS)), cache_dir,
                             runs_dir, device, progress, log=lambda m: err_console.print(f"[cyan]{m}[/]"),
                             encoders=words(encoders) or [None], need_model=bool(rerank), tuned=tuned,
                             on_run=export_and_rerank if rerank else None)
        err_console.print(f"runs: {counts['trained']} trained, {counts['reused']} reused")
    out = make_table(runs_dir, published or PUBLISHED, only={"dataset": words(datasets), "method": names if methods else [],
                                                             "bits": bit_list, "seed": seed_list},
                     strict=not train)  # after training, a method that could not run here (UCMFH) just has no row
    if examples:
        drawn = example_figures(collect_runs(runs_dir), cache_dir, runs_dir / "figures", examples, examples_seed)
        err_console.print(f"examples: {len(drawn) // 3} figures (PNG, PDF and their data as JSON) in {runs_dir / 'figures'}")
    for table in rich_tables(out["blocks"]):
        console.print(table)
    for line in out["protocol"]:
        console.print(f"[bold]protocol[/] {line}")
    console.print(f"written: {out['markdown']}, {out['latex']}, {len(out['figures'])} figures in {runs_dir / 'figures'}")


@user_errors
def tune_command(
    dataset: CachedDataset = None,
    method: Method = "cfrh",
    bits: Bits = 32,
    trials: Annotated[int, typer.Option(min=1, help="the budget: finished trials (pruned ones count)")] = 30,
    seed: seed_option("every trial's training, and the sampler's") = 0,
    timeout: Annotated[float | None, typer.Option(min=1, help="stop starting trials after S seconds")] = None,
    jobs: Annotated[int, typer.Option(min=1, help="parallel worker processes (torch threads split between them)")] = 1,
    space: Annotated[Path | None, typer.Option(help="a search-space file (default: configs/search/<method>.json)")] = None,
    storage: Annotated[str | None, typer.Option(help="an Optuna storage URL (default: sqlite study.db in the "
                                                     "study folder; postgresql://… for a cluster)")] = None,
    device: Device = DEVICE,
    cache_dir: CacheDir = CACHE_DIR,
    runs_dir: RunsDir = RUNS_DIR,
    ablate: Annotated[bool, typer.Option(help="instead: CFRH with each part removed or swapped, on validation, "
                                              "as an ablation table (RUNS_DIR/ablation/…)")] = False,
    seeds: words_option("with --ablate: the seeds pooled") = ["0 1 2"],
    config: Annotated[Path | None, typer.Option(help="with --ablate: the full model's config (e.g. a best.json)")] = None,
    progress: Progress = True,
    version: Version = False,
) -> None:
    """Tune a method on the validation split (Optuna, same budget for every method); resumable."""
    from cfrh_train.ablation import ablate as run_ablation
    from cfrh_train.tune import study_dir, tune
    dataset = choose_dataset(dataset, cache_dir)
    if ablate:
        if method != "cfrh":
            raise ConfigError("--ablate takes CFRH apart: use --method cfrh")
        report = run_ablation(dataset, bits, words(seeds, int, "--seeds"), cache_dir, runs_dir, config, device)
        console.print(Path(report["markdown"]).read_text())
        return
    summary = tune(dataset, method, bits, trials, cache_dir, runs_dir, seed, device, timeout, jobs, space,
                   storage, progress=progress)
    folder = study_dir(runs_dir, dataset, method, bits)
    default, test = summary["default_val_map"], summary["test_metrics"]
    key = next(k for k in test["i2t"] if k.startswith("map@") and k != "map@all" and "tie" not in k)
    console.print(f"{method} · {dataset} · {bits} bits: {summary['trials']} trials ({summary['pruned']} pruned); "
                  f"validation {key} best {summary['best_val_map']:.4f} (trial {summary['best_trial']}), default "
                  f"{'–' if default is None else f'{default:.4f}'}; test {key} (scored once) "
                  f"I→T {test['i2t'][key]:.4f}, T→I {test['t2i'][key]:.4f}")
    console.print(f"best config: {folder / 'best.json'} (cfrh-train --config it); summary, history.png in {folder}")
