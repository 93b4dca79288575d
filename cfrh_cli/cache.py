"""``cfrh cache`` (alias ``cfrh-cache``): stage 1 from the command line (synth, features, import,
info, verify).

A thin layer over the library: options are parsed and checked here, the work is done by
``cfrh_cache.pipeline``, ``.importer`` and ``.verify`` (imported when a command runs, so that
``--help`` and ``info`` stay light).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cfrh.cliutil import console, err_console, user_errors
from cfrh.errors import ConfigError
from cfrh_cli.options import (
    CACHE_DIR,
    DEVICE,
    CacheDir,
    Dataset,
    Device,
    OnError,
    Progress,
    Protocol,
    TextKind,
    Version,
    seed_option,
)

app = typer.Typer(no_args_is_help=True, help="Stage 1: read a dataset, encode its images once, write the cache.")


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log what each step reads and decides")] = False,
           version: Version = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command()
@user_errors
def synth(out: Annotated[Path, typer.Option(help="folder to write the demo dataset into")],
          n: Annotated[int, typer.Option(min=50, help="number of image–text pairs")] = 3000,
          labels: Annotated[int, typer.Option(min=2, help="number of labels (visual concepts)")] = 12,
          seed: seed_option("the drawing") = 0,
          size: Annotated[int, typer.Option(min=16, help="image side in pixels")] = 224) -> None:
    """Write the offline demo dataset (MIRFlickr .mat trio + manifest.csv with JPEGs)."""
    from cfrh_cache.readers.synth import make_synth
    path = make_synth(out, n=n, n_labels=labels, seed=seed, size=size)
    err_console.print(f"wrote {n} synthetic pairs with {labels} labels to [bold]{path}[/] "
                      f"(mirflickr/*.mat and manifest.csv)")


@app.command()
@user_errors
def features(
    dataset: Annotated[Dataset, typer.Argument(help="the dataset's on-disk form")],
    root: Annotated[Path, typer.Option(help="the dataset's folder (manifest: the file or its folder)")],
    cache_dir: CacheDir = CACHE_DIR,
    model: Annotated[str, typer.Option(help="open_clip architecture (open_clip.list_models())")] = "ViT-B-32",
    pretrained: Annotated[str, typer.Option(help="open_clip tag, local weights file, or 'none'")] = "openai",
    batch_size: Annotated[int, typer.Option(min=1, help="images per encoder call")] = 256,
    workers: Annotated[int, typer.Option(min=0, help="DataLoader workers decoding/resizing images")] = 2,
    device: Device = DEVICE,
    protocol: Annotated[Protocol, typer.Option(help="split protocol")] = Protocol.djsrh,
    seed: seed_option("the split (and of a random encoder's weights)") = 0,
    vocab_size: Annotated[int, typer.Option(min=1, help="vocabulary size for datasets with raw text")] = 2000,
    min_df: Annotated[int, typer.Option(min=1, help="drop words found in fewer texts")] = 2,
    resplit: Annotated[bool, typer.Option(help="replace a stored split of another protocol/seed")] = False,
    val_holdout: Annotated[bool | None, typer.Option(help="hold the validation rows out of training (default: "
                                                          "where the protocol trains on the database: ucch, wiki)")] = None,
    rebuild: Annotated[bool, typer.Option(help="rebuild what was made from other inputs (changed files or options); "
                                               "the cache is replaced only once the rebuild is complete")] = False,
    image_layout: Annotated[str | None, typer.Option(help="axis order of an image array (IAll) in MATLAB order, "
                                                          "e.g. HWCN, where the reader cannot tell it")] = None,
    text_encoder: Annotated[bool, typer.Option(help="also the model's CLIP text embeddings of raw texts "
                                                    "(text/<model>__<pretrained>; train with --text TAG)")] = False,
    chunk_rows: Annotated[int, typer.Option(min=1, help="rows per Zarr chunk (the unit of resumption and of ranks)")] = 1024,
    name: Annotated[str | None, typer.Option(help="the cache's name, CACHE_DIR/NAME (default: the dataset's form, "
                                                  "e.g. webdataset)")] = None,
    label_field: Annotated[str | None, typer.Option(help="webdataset, parquet: the JSON field (or column) holding "
                                                         "a sample's labels (a name or a list)")] = None,
    on_error: Annotated[OnError, typer.Option(help="webdataset, parquet: a broken shard, a sample without image or "
                                                   "caption, an undecodable image stops the read, or is skipped "
                                                   "and counted")] = OnError.stop,
    max_chunks: Annotated[int | None, typer.Option(hidden=True)] = None,
    progress: Progress = True,
) -> None:
    """Stage 1: read DATASET, encode its images once, write texts, labels, split and features."""
    from cfrh_cache.distributed import distributed_context
    from cfrh_cache.options import FeatureOptions
    from cfrh_cache.pipeline import build_features
    options = FeatureOptions(model=model, pretrained=pretrained, batch_size=batch_size, workers=workers, device=device,
                             protocol=protocol.value, seed=seed, vocab_size=vocab_size, min_df=min_df, resplit=resplit,
                             rebuild=rebuild, chunk_rows=chunk_rows, progress=progress, image_layout=image_layout,
                             text_encoder=text_encoder, val_holdout=val_holdout, label_field=label_field,
                             on_error=on_error.value)
    with distributed_context(device) as (rank, ranks, barrier, dev):
        report = build_features(dataset.value, root, cache_dir, replace(options, device=dev), rank=rank, ranks=ranks,
                                barrier=barrier, max_chunks=max_chunks, name=name)
    if rank != 0:
        return
    stats = report.stats.as_dict()
    if stats["skipped"]:
        err_console.print(f"image/{report.encoder_tag}: already complete, nothing to encode")
    else:
        err_console.print(f"encoded {stats['images']} images at {stats['images_per_s']} img/s "
                          f"(read {stats['share']['read_s']:.0%}, encode {stats['share']['encode_s']:.0%}, "
                          f"write {stats['share']['write_s']:.0%})")
    for note in report.notes:
        err_console.print(f"  · {note}")
    err_console.print(f"cache: [bold]{report.cache}[/] (wrote: {', '.join(report.written) or 'nothing new'})")


@app.command("import")
@user_errors
def import_(
    name: Annotated[str, typer.Argument(help="the cache's name: CACHE_DIR/NAME, and cfrh-train --dataset NAME")],
    image: Annotated[str, typer.Option(help="image features: FILE[:KEY] (.npy .npz .mat .h5 .parquet) or a "
                                            "clip-retrieval output folder")],
    text: Annotated[str | None, typer.Option(help="text vectors, FILE[:KEY], one row per image row (leave out, "
                                                  "with --labels, to add image features to an existing cache)")] = None,
    labels: Annotated[str | None, typer.Option(help="labels, FILE[:KEY]: multi-hot rows or class numbers")] = None,
    query: Annotated[str | None, typer.Option(help="query rows, FILE[:KEY] (0-based; 1-based in .mat) or a 0/1 mask")] = None,
    database: Annotated[str | None, typer.Option(help="database rows, as --query")] = None,
    train: Annotated[str | None, typer.Option(help="training rows (inside the database), as --query")] = None,
    text_kind: Annotated[TextKind, typer.Option(help="bow: non-negative counts or weights; dense: features "
                                                     "(LDA, Doc2Vec, CLIP text)")] = TextKind.bow,
    encoder_name: Annotated[str, typer.Option(help="names the features: image/<name> (e.g. vgg19)")] = "imported",
    cache_dir: CacheDir = CACHE_DIR,
    protocol: Annotated[Protocol, typer.Option(help="split protocol when no split files are given")] = Protocol.djsrh,
    seed: seed_option("the split") = 0,
    resplit: Annotated[bool, typer.Option(help="replace a stored split of another protocol/seed")] = False,
    rebuild: Annotated[bool, typer.Option(help="rebuild what was made from other inputs")] = False,
    progress: Progress = True,
) -> None:
    """Import features computed elsewhere (VGG-19 .npy, DGCPN, UCCH .mat, clip-retrieval) into a cache."""
    from cfrh_cache.importer import add_image_features, import_source, split_spec
    from cfrh_cache.options import FeatureOptions
    from cfrh_cache.pipeline import build_source
    if text is None and labels is None:
        name_ = add_image_features(cache_dir / name, image, encoder_name)
        err_console.print(f"cache: [bold]{cache_dir / name}[/] has {name_}; compare encoders with "
                          f"make table ENCODERS=\"... {encoder_name}\" or cfrh-train --encoder {encoder_name}")
        return
    if text is None or labels is None:
        raise ConfigError("--text and --labels go together (both left out: add --image features to an existing cache)")
    source = import_source(name, image, text, labels, query, database, train, text_kind.value, encoder_name)
    options = FeatureOptions(protocol=protocol.value, seed=seed, resplit=resplit, rebuild=rebuild, progress=progress)
    root = split_spec(image)[0]
    report = build_source(source, name, root if root.is_dir() else root.parent, cache_dir, options)
    for note in report.notes:
        err_console.print(f"  · {note}")
    err_console.print(f"cache: [bold]{report.cache}[/] (wrote: {', '.join(report.written) or 'nothing new'}); "
                      f"train with: cfrh-train --dataset {name} --cache-dir {cache_dir}")


@app.command()
@user_errors
def info(path: Annotated[Path, typer.Argument(help="a dataset cache, e.g. cache/synth")],
         as_json: Annotated[bool, typer.Option("--json", help="print plain JSON for scripts")] = False) -> None:
    """Summary of a cache: arrays, encoders, split, vocabulary, sources."""
    from cfrh_cache.verify import info as cache_info
    summary = cache_info(path)
    if as_json:
        print(json.dumps(summary, indent=1))
        return
    console.print(f"[bold]{summary['dataset']}[/] n={summary['n']} at {summary['path']} "
                  f"(cfrh {summary['cfrh_version']}, created {summary['created']})")
    table = Table("array", "shape", "dtype", "complete")
    for name, a in summary["arrays"].items():
        table.add_row(name, "×".join(map(str, a["shape"])), a["dtype"], "yes" if a["complete"] else "[red]no[/]")
    console.print(table)
    for tag, enc in summary["encoders"].items():
        warning = f" [yellow]{enc['warning']}[/]" if "warning" in enc else ""
        console.print(f"encoder {tag}: dim {enc.get('dim')}, {enc.get('encode_stats', {}).get('images_per_s')} img/s"
                      f" on {enc.get('device')}{warning}")
    if summary["split"]:
        s = summary["split"]
        console.print(f"split {s['protocol']} seed {s['seed']}: query {s['n_query']}, database {s['n_database']}, "
                      f"train {s['n_train']}, val {s['n_val']}" + "".join(f"\n  · {x}" for x in s["notes"]))
    if summary["vocabulary"]:
        vocab = summary["vocabulary"]
        words = vocab.get("first_words") or []
        settings = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in vocab.items() if k != "first_words")
        console.print(f"vocabulary: {settings}" + (f"; first words: {' '.join(words)}" if words else ""))


@app.command()
@user_errors
def verify(path: Annotated[Path, typer.Argument(help="a dataset cache, e.g. cache/synth")],
           sources: Annotated[bool, typer.Option(help="also re-hash the source files")] = False) -> None:
    """Re-check completeness, shapes, split rules and checksums; exit 1 on any problem."""
    from cfrh_cache.verify import verify as cache_verify
    problems = cache_verify(path, sources)
    if problems:
        for p in problems:
            err_console.print(f"[red]✗[/] {p}")
        raise typer.Exit(1)
    console.print(f"[green]✓[/] {path}: complete, consistent, checksums match")
