"""``cfrh search``, ``cfrh serve``, ``cfrh export`` (alias ``cfrh-search``): thin Typer layers over
``cfrh_search``, which uses a run's codes."""

from __future__ import annotations

import errno
import json
import socket
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cfrh.cliutil import console, err_console, user_errors
from cfrh.errors import ConfigError
from cfrh.fsio import atomic_write_text
from cfrh_cli.options import (
    CACHE_DIR,
    DEVICE,
    INDEX,
    CacheDir,
    Device,
    IndexParams,
    Modality,
    SearchIndex,
    Shards,
    Version,
)
from cfrh_train.config import parse_set

RunFolder = Annotated[Path, typer.Argument(help="a run folder written with --export (or its index/ folder)")]


@user_errors
def search_command(
    run_dir: RunFolder,
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
    html: Annotated[Path | None, typer.Option(help="also write the hits as a self-contained HTML page (a file)")] = None,
    serve: Annotated[bool, typer.Option(help="serve a local search page instead (as `cfrh serve RUN`)")] = False,
    port: Annotated[int, typer.Option(min=1, max=65535, help="with --serve: the port on 127.0.0.1")] = 8000,
    device: Device = DEVICE,
    version: Version = False,
) -> None:
    """Hash a query with a trained model and print its nearest database items."""
    from cfrh_search.hits import describe, described_hits, for_page, thumbnail_uri
    from cfrh_search.index import Index
    from cfrh_search.pages import hits_page
    from cfrh_search.queries import Queries
    from cfrh_search.rerank import record_rerank
    from cfrh_search.rerank import rerank as rerank_hits
    if serve:
        return serve_command(run_dir, port=port, device=device)
    if evaluate_rerank:
        print(json.dumps(record_rerank(Index(run_dir).folder.parent, evaluate_rerank, device)))
        return
    if sum(x is not None for x in (text, image, row)) != 1:
        raise ConfigError("give exactly one query: --text, --image or --row")
    if html is not None and html.is_dir():
        raise ConfigError(f"--html {html}: a folder; give the page's file name, e.g. {html / 'hits.html'}")
    index = Index(run_dir)
    queries = Queries(index, device)
    if weights:
        queries.use_weights(weights)
    feature = None  # an image query's CLIP feature: what re-ranking compares
    if text is not None:
        source, code = "text", queries.text_code(text)
    elif image is not None:
        source, (code, feature) = "image", queries.image_code(image)
    else:
        source, (code, vectors) = modality.value, queries.row_code(row, modality.value)
        feature = vectors if source == "image" else None
    target = target.value if target else ("text" if source == "image" else "image")
    hits = (rerank_hits(index, code, target, k, rerank, image_feature=feature) if rerank
            else index.search(code, target, k)[0])
    out = described_hits(index, hits)
    title = f"{source} query → {target} codes · {index.title}"
    if html:
        shows_image = image is not None or (row is not None and source == "image")
        query = {"text": text, "row": row, "labels": describe(index, [row])[0]["labels"] if row is not None else None,
                 "image": thumbnail_uri(index, row, image) if shows_image else None}
        atomic_write_text(html, hits_page(title, query, for_page(index, out, target)))
        err_console.print(f"page: [bold]{html}[/]")
    if as_json:
        print(json.dumps({"query": {"text": text, "image": str(image) if image else None, "row": row,
                                    "target": target, "rerank": rerank}, "hits": out}))
        return
    table = Table(title=title)
    for col in ("rank", "row", "distance", *(["score"] if rerank else []), "labels", "text", "image"):
        table.add_column(col, overflow="fold")
    for h in out:
        table.add_row(str(h["rank"]), str(h["row"]), str(h["distance"]),
                      *([f"{h['score']:.3f}"] if rerank else []), ", ".join(h["labels"]),
                      h.get("text") or " ".join(h.get("text_words", [])[:12]), h.get("image", ""))
    console.print(table)


def port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be listened on now (a busy port is refused before loading anything)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


@user_errors
def serve_command(
    run_dir: RunFolder,
    host: Annotated[str, typer.Option(help="the address to listen on (the default: this machine only)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="the port")] = 8000,
    device: Device = DEVICE,
    version: Version = False,
) -> None:
    """Serve a local search page over a run's index: type a text or drop an image, see the hits."""
    try:
        import uvicorn

        from cfrh_search.serve import load
    except ImportError:
        raise ConfigError("cfrh serve needs FastAPI and uvicorn (pip install 'cfrh[serve]')") from None
    if not port_free(host, port):
        raise ConfigError(f"--port {port}: {host}:{port} is in use (or not allowed); choose another port")
    app = load(run_dir, device)  # loads the index now: a bad folder fails before listening
    err_console.print(f"serving {run_dir} on http://{host}:{port}/ (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


@user_errors
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="a finished run folder")],
    to: Annotated[Path | None, typer.Option(help="instead of the search index: the codes as FILE.parquet or FILE.npy "
                                                 "(±1 and packed, rows, labels), for faiss, numpy, pandas, DuckDB")] = None,
    real: Annotated[bool, typer.Option(help="with --to: also the model's real-valued outputs")] = False,
    cache_dir: CacheDir = CACHE_DIR,
    index: SearchIndex = INDEX,
    index_param: IndexParams = [],
    shards: Shards = 1,
    version: Version = False,
) -> None:
    """Write (or write again) a run's search index, <run>/index/, from its model and codes; or, with
    --to, its codes in a file other tools read."""
    from cfrh_search.export import export_codes
    from cfrh_search.index import IndexSpec, export_index
    if to is not None:
        err_console.print(f"codes: [bold]{export_codes(run_dir, to, cache_dir, real)}[/]")
        return
    folder = export_index(run_dir, cache_dir, IndexSpec(index.value, parse_set(index_param), shards))
    err_console.print(f"index: [bold]{folder}[/]")
