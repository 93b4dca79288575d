"""``cfrh train``, ``cfrh table``, ``cfrh search`` (aliases ``cfrh-train``, ``cfrh-table``,
``cfrh-search``): thin Typer layers over ``cfrh_train.train``, ``.table`` and ``.search``."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cfrh.cliutil import console, err_console, user_errors
from cfrh.errors import CacheError, ConfigError
from cfrh_train.config import load, parse_set
from cfrh_train.methods import METHODS

MethodName = Enum("MethodName", {m: m for m in METHODS}, type=str)
Modality = Enum("Modality", {m: m for m in ("image", "text")}, type=str)
IndexKind = Enum("IndexKind", {k: k for k in ("exact", "ivf", "hnsw", "mih")}, type=str)


@user_errors
def train_command(
    dataset: Annotated[str, typer.Option(help="cached dataset under --cache-dir")] = "synth",
    bits: Annotated[int | None, typer.Option(min=1, max=1023, help="code length K")] = None,
    method: Annotated[MethodName | None, typer.Option(help="the hashing method")] = None,
    seed: Annotated[int | None, typer.Option(min=0, help="training seed")] = None,
    config: Annotated[Path | None, typer.Option(help="JSON config overriding the dataset's defaults")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="training epochs")] = None,
    encoder: Annotated[str | None, typer.Option(help="image/<tag> array to use when the cache has several")] = None,
    text: Annotated[str | None, typer.Option(help="text input: bow (the dataset's own text) or a text encoder's "
                                                  "tag, e.g. ViT-B-32__openai (cfrh-cache features --text-encoder)")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N")] = None,
    cache_dir: Annotated[Path, typer.Option(help="the cache root (stage 1's --cache-dir)")] = Path("cache"),
    runs_dir: Annotated[Path, typer.Option(help="where run folders go")] = Path("runs"),
    set_: Annotated[list[str], typer.Option("--set", help="override any config key: --set phi=0.2")] = [],
    progress: Annotated[bool, typer.Option(help="show the progress bar")] = True,
    export: Annotated[bool, typer.Option(help="also write <run>/index/ for cfrh-search")] = False,
    index: Annotated[IndexKind, typer.Option(help="with --export: exact, or faiss's ivf, hnsw or mih "
                                                  "(approximate; pip install 'cfrh[ann]')")] = IndexKind.exact,
    index_param: Annotated[list[str], typer.Option(help="with --index: a parameter, e.g. nprobe=32, ef_search=128, "
                                                        "nflip=2 (repeat it)")] = [],
    shards: Annotated[int, typer.Option(min=1, help="with --export: split the index in N shards, searched and merged")] = 1,
) -> None:
    """Train on cached features, select on validation, evaluate the queries once, write the run folder."""
    from cfrh_train import ann
    from cfrh_train.results import read_result
    from cfrh_train.search import IndexSpec
    from cfrh_train.train import run
    overrides = parse_set(set_)
    for key, value in (("bits", bits), ("method", method and method.value), ("seed", seed), ("epochs", epochs),
                       ("encoder", encoder), ("text", None if text == "bow" else text), ("device", device)):
        if value is not None:
            overrides[key] = value
    params = parse_set(index_param)
    ann.check_params(index.value, params)  # before training, not after it
    spec = IndexSpec(index.value, params, shards)
    folder = run(load(dataset, config, overrides), cache_dir, dataset, runs_dir, progress=progress, export=export,
                 index=spec)
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
    console.print(f"protocol {p['name']} seed {p['seed']}: {p['n_query']} queries, {p['n_database']} database, "
                  f"{p['n_train']} train, {p['n_val']} val · encoder {result['encoder']['tag']} · "
                  f"selected epoch {sel['epoch']} on val · train {result['timing']['train_s']:.1f}s, "
                  f"eval {result['timing']['eval_s']:.1f}s")
    if result["encoder"].get("warning"):
        console.print(f"[yellow]{result['encoder']['warning']}[/]")
    console.print(f"run folder: [bold]{folder}[/]")



def _words(text: str, kind=str, option: str = "") -> list:
    """A list option as space- (or comma-) separated words: --bits "16 32"."""
    try:
        return [kind(w) for w in text.replace(",", " ").split()]
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected {kind.__name__} values separated by spaces") from None


@user_errors
def table_command(
    datasets: Annotated[str, typer.Option(help="datasets to train/show (default: every cached dataset)")] = "",
    bits: Annotated[str, typer.Option(help="code lengths")] = "16 32 64 128",
    seeds: Annotated[str, typer.Option(help="training seeds (rows show mean ± std over them)")] = "0 1 2",
    methods: Annotated[str, typer.Option(help="methods to train")] = "cfrh jdsh djsrh dgcpn ucch lsh",
    encoders: Annotated[str, typer.Option(help="image arrays of the cache to compare, e.g. "
                                               "'ViT-B-32__openai ViT-L-14__openai' (default: the cache's only one)")] = "",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda")] = "auto",
    cache_dir: Annotated[Path, typer.Option(help="the cache root (stage 1's --cache-dir)")] = Path("cache"),
    runs_dir: Annotated[Path, typer.Option(help="where run folders go, and the table with them")] = Path("runs"),
    train: Annotated[bool, typer.Option(help="train missing runs; --no-train renders what is there")] = True,
    published: Annotated[Path | None, typer.Option(help="published figures CSV (default: the bundled copy)")] = None,
    rerank: Annotated[int, typer.Option(help="also score re-ranking of the Hamming top-R (0: off); "
                                             "runs are trained with --export for it")] = 0,
    tuned: Annotated[int, typer.Option(min=0, help="also rows from each method's best config of a study of "
                                                  "exactly N trials on the validation split (0: off)")] = 0,
    examples: Annotated[int, typer.Option(min=0, help="also draw N test queries (chosen by seed) with each "
                                                     "method's top hits, as PNG and PDF (0: off)")] = 0,
    examples_seed: Annotated[int, typer.Option(min=0, help="seed that chooses the example queries")] = 0,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Train what is missing (a finished run is reused only when made from the same inputs), then write
    runs/table.md, runs/table.tex and runs/figures/, and print the table."""
    from cfrh_train.table import PUBLISHED, cached_datasets, ensure_runs, make_table, rich_tables
    if train:
        names = _words(datasets) or cached_datasets(cache_dir)
        if not names:
            raise CacheError(f"{cache_dir}: no cached dataset; run `make features` (or `make demo`) first")
        unknown = [m for m in _words(methods) if m not in METHODS]
        if unknown:
            raise ConfigError(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(METHODS)}")
        counts = ensure_runs(names, _words(methods), _words(bits, int, "--bits"), _words(seeds, int, "--seeds"),
                             cache_dir, runs_dir, device, progress, log=lambda m: err_console.print(f"[cyan]{m}[/]"),
                             encoders=_words(encoders) or [None], rerank=rerank, tuned=tuned)
        err_console.print(f"runs: {counts['trained']} trained, {counts['reused']} reused")
    out = make_table(runs_dir, published or PUBLISHED)
    if examples:
        from cfrh_train.examples import example_figures
        from cfrh_train.table import collect_runs
        drawn = example_figures(collect_runs(runs_dir), cache_dir, runs_dir / "figures", examples, examples_seed)
        err_console.print(f"examples: {len(drawn) // 3} figures (PNG, PDF and their data as JSON) in {runs_dir / 'figures'}")
    for table in rich_tables(out["blocks"]):
        console.print(table)
    for line in out["protocol"]:
        console.print(f"[bold]protocol[/] {line}")
    console.print(f"written: {out['markdown']}, {out['latex']}, {len(out['figures'])} figures in {runs_dir / 'figures'}")



@user_errors
def search_command(
    run_dir: Annotated[Path, typer.Argument(help="a run folder written with --export (or its index/ folder)")],
    text: Annotated[str | None, typer.Option(help="a text query (BoW through the cache's vocabulary)")] = None,
    image: Annotated[Path | None, typer.Option(help="an image query (the cache's open_clip encoder)")] = None,
    row: Annotated[int | None, typer.Option(help="use cache row N as the query (its --modality side)")] = None,
    modality: Annotated[Modality, typer.Option(help="for --row: which side of the row is the query")] = Modality.image,
    target: Annotated[Modality | None, typer.Option(help="search image or text codes (default: the other modality)")] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="how many hits")] = 10,
    rerank: Annotated[int, typer.Option(min=0, help="re-rank the Hamming top-R (0: off)")] = 0,
    weights: Annotated[Path | None, typer.Option(help="the local weights file the cache was built with")] = None,
    evaluate_rerank: Annotated[int, typer.Option(min=0, help="score re-ranking of the top-R on the test queries "
                                                      "(mAP@50, ms/query) into result.json")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts")] = False,
    html: Annotated[Path | None, typer.Option(help="also write the hits as a self-contained HTML page")] = None,
    serve: Annotated[bool, typer.Option(help="serve a local search page instead (as `cfrh serve RUN`)")] = False,
    port: Annotated[int, typer.Option(min=1, max=65535, help="with --serve: the port on 127.0.0.1")] = 8000,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
) -> None:
    """Hash a query with a trained model and print its nearest database items."""
    from cfrh_train.search import Index, record_rerank
    if serve:
        return serve_command(run_dir, port=port, device=device)
    folder = run_dir / "index" if (run_dir / "index" / "index.json").is_file() else run_dir
    if evaluate_rerank:
        print(json.dumps(record_rerank(folder.parent, evaluate_rerank, device)))
        return
    if sum(x is not None for x in (text, image, row)) != 1:
        raise ConfigError("give exactly one query: --text, --image or --row")
    index = Index(folder, device)
    if weights:
        index.use_weights(weights)
    feature = None
    if text is not None:
        source, code = "text", index.hash(text=index.text_vectors([text]))[1]
    elif image is not None:
        feature = index.image_features([image])
        source, code = "image", index.hash(image=feature)[0]
    elif modality == Modality.image:
        feature = index.rows_of([row], "image")
        source, code = "image", index.hash(image=feature)[0]
    else:
        source, code = "text", index.hash(text=index.rows_of([row], "text"))[1]
    target = target.value if target else ("text" if source == "image" else "image")
    hits = index.rerank(code, target, k, rerank, image_feature=feature) if rerank else index.search(code, target, k)[0]
    described = index.describe([h.row for h in hits])
    out = [{"rank": i + 1, "distance": h.distance, **({"score": h.score} if h.score is not None else {}), **d}
           for i, (h, d) in enumerate(zip(hits, described))]
    if html:
        from cfrh.fsio import atomic_write_text
        from cfrh_train.pages import hits_page
        query = {"text": text, "row": row, "labels": index.describe([row])[0]["labels"] if row is not None else None,
                 "image": index.thumbnail(row, image) if (image is not None or (row is not None and source == "image"))
                 else None}
        shown = [{**h, "image": index.thumbnail(h["row"]) if target == "image" else None,
                  "text": h.get("text") or " ".join(h.get("text_words", [])) if target == "text" else None}
                 for h in out]
        title = f"{source} query → {target} · {index.meta['method']} {index.bits} bits · {index.meta['dataset']}"
        atomic_write_text(html, hits_page(title, query, shown))
        err_console.print(f"page: [bold]{html}[/]")
    if as_json:
        print(json.dumps({"query": {"text": text, "image": str(image) if image else None, "row": row,
                                    "target": target, "rerank": rerank}, "hits": out}))
        return
    table = Table(title=f"{source} query → {target} codes · {index.meta['method']} {index.bits} bits · {index.meta['dataset']}")
    for col in ("rank", "row", "distance", *(["score"] if rerank else []), "labels", "text", "image"):
        table.add_column(col, overflow="fold")
    for h in out:
        table.add_row(str(h["rank"]), str(h["row"]), str(h["distance"]),
                      *([f"{h['score']:.3f}"] if rerank else []), ", ".join(h["labels"]),
                      h.get("text") or " ".join(h.get("text_words", [])[:12]), h.get("image", ""))
    console.print(table)



@user_errors
def serve_command(
    run_dir: Annotated[Path, typer.Argument(help="a run folder written with --export (or its index/ folder)")],
    host: Annotated[str, typer.Option(help="the address to listen on (the default: this machine only)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="the port")] = 8000,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
) -> None:
    """Serve a local search page over a run's index: type a text or drop an image, see the hits."""
    from cfrh_train.serve import create_app
    app = create_app(run_dir, device)  # loads the index now: a bad folder fails before listening
    import uvicorn
    err_console.print(f"serving {run_dir} on http://{host}:{port}/ (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


@user_errors
def tune_command(
    dataset: Annotated[str, typer.Option(help="cached dataset under --cache-dir")] = "synth",
    method: Annotated[MethodName, typer.Option(help="the method to tune")] = MethodName.cfrh,
    bits: Annotated[int, typer.Option(min=1, max=1023, help="code length K")] = 32,
    trials: Annotated[int, typer.Option(min=1, help="the budget: finished trials (pruned ones count)")] = 30,
    seed: Annotated[int, typer.Option(min=0, help="training seed of every trial, and the sampler's")] = 0,
    timeout: Annotated[float | None, typer.Option(min=1, help="stop starting trials after S seconds")] = None,
    jobs: Annotated[int, typer.Option(min=1, help="parallel worker processes (torch threads split between them)")] = 1,
    space: Annotated[Path | None, typer.Option(help="a search-space file (default: configs/search/<method>.json)")] = None,
    storage: Annotated[str | None, typer.Option(help="an Optuna storage URL (default: sqlite study.db in the "
                                                     "study folder; postgresql://… for a cluster)")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda")] = "cpu",
    cache_dir: Annotated[Path, typer.Option(help="the cache root (stage 1's --cache-dir)")] = Path("cache"),
    runs_dir: Annotated[Path, typer.Option(help="studies go to RUNS_DIR/tune/…")] = Path("runs"),
    ablate: Annotated[bool, typer.Option(help="instead: CFRH with each part removed or swapped, on validation, "
                                              "as an ablation table (RUNS_DIR/ablation/…)")] = False,
    seeds: Annotated[str, typer.Option(help="with --ablate: the seeds pooled")] = "0 1 2",
    config: Annotated[Path | None, typer.Option(help="with --ablate: the full model's config (e.g. a best.json)")] = None,
) -> None:
    """Tune a method on the validation split (Optuna, same budget for every method); resumable."""
    if ablate:
        from cfrh_train.ablation import ablate as run_ablation
        if method != MethodName.cfrh:
            raise ConfigError("--ablate takes CFRH apart: use --method cfrh")
        report = run_ablation(dataset, bits, _words(seeds, int, "--seeds"), cache_dir, runs_dir, config, device)
        console.print(Path(report["markdown"]).read_text())
        return
    from cfrh_train.tune import study_dir, tune
    summary = tune(dataset, method.value, bits, trials, cache_dir, runs_dir, seed, device, timeout, jobs, space,
                   storage)
    folder = study_dir(runs_dir, dataset, method.value, bits)
    default, test = summary["default_val_map"], summary["test_metrics"]
    key = next(k for k in test["i2t"] if k.startswith("map@") and k != "map@all" and "tie" not in k)
    console.print(f"{method.value} · {dataset} · {bits} bits: {summary['trials']} trials ({summary['pruned']} pruned); "
                  f"validation {key} best {summary['best_val_map']:.4f} (trial {summary['best_trial']}), default "
                  f"{'–' if default is None else f'{default:.4f}'}; test {key} (scored once) "
                  f"I→T {test['i2t'][key]:.4f}, T→I {test['t2i'][key]:.4f}")
    console.print(f"best config: {folder / 'best.json'} (cfrh-train --config it); summary, history.png in {folder}")
