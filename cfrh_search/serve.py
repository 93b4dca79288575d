"""``cfrh serve RUN``: a small local web page over a run's search index (FastAPI + uvicorn, an
optional extra: ``pip install 'cfrh[serve]'``). Type a text or drop an image, see the hits as
``cfrh-search --html`` draws them. ``load(RUN)`` loads the index into the module's ``app`` once,
before it listens; the routes are plain functions of this module.

    GET  /                         the page: a text box and an image upload
    GET  /search?text=…&k=10       the hits of a text query, as a page
    GET  /search?row=N&modality=image   the hits of a cache row's image (or text), as a page
    POST /search (image, k)        the hits of an uploaded image, as a page
    GET  /api/search?text=…&k=10   the same as JSON (``target`` image|text, default: the other side)
    POST /api/search (image, k)    likewise for an image
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time

import tempfile
from html import escape
from pathlib import Path

from fastapi import FastAPI, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import HTMLResponse

from cfrh.errors import CfrhError
from cfrh_search.hits import describe, described_hits, for_page, shown_text, thumbnail_uri
from cfrh_search.index import Index
from cfrh_search.pages import hits_page, search_form
from cfrh_search.queries import Queries

MAX_K = 1000
app = FastAPI(title="cfrh search")


def load(run_folder: str | Path, device: str = "auto") -> FastAPI:
    """The app, serving one run's index (``<run>/index``), loaded now: a bad folder fails here."""
    index = Index(run_folder)
    app.state.index, app.state.queries = index, Queries(index, device)
    app.title = f"cfrh · {index.title}"
    return app


def _hits(code, source: str, target: str | None, k: int) -> tuple[str, list[dict]]:
    index: Index = app.state.index
    target = target or ("text" if source == "image" else "image")
    return target, described_hits(index, index.search(code, target, k)[0])


def _by_text(text: str | None, k: int, target: str | None, row: int | None = None,
             modality: str = "image") -> tuple[str, list[dict]]:
    """A free text, or a cache row's image or text, as the query."""
    if (text is None) == (row is None):
        raise HTTPException(422, "give exactly one query: text or row")
    if modality not in ("image", "text"):
        raise HTTPException(422, f"modality {modality!r}: expected image or text")
    try:
        queries: Queries = app.state.queries
        if row is not None:
            return _hits(queries.row_code(row, modality)[0], modality, target, k)
        return _hits(queries.text_code(text), "text", target, k)
    except CfrhError as exc:
        raise HTTPException(400, str(exc)) from None


def _by_image(upload: UploadFile, k: int, target: str | None) -> tuple[str, list[dict], str]:
    name = upload.filename or "the upload"
    with tempfile.NamedTemporaryFile(suffix=Path(name).suffix) as tmp:
        tmp.write(upload.file.read())
        tmp.flush()
        try:
            target, found = _hits(app.state.queries.image_code(tmp.name, name)[0], "image", target, k)
            return target, found, thumbnail_uri(app.state.index, file=tmp.name)
        except CfrhError as exc:
            raise HTTPException(400, str(exc)) from None


def _page(query: dict, target: str, found: list[dict]) -> str:
    return hits_page(app.state.index.title, query, for_page(app.state.index, found, target), form=True)


@app.get("/", response_class=HTMLResponse)
def home() -> str:
    title = escape(app.state.index.title)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>cfrh search · {title}</title></head>"
            f"<body style='font-family: system-ui, sans-serif; margin: 1.5em'><h1>{title}</h1>{search_form()}"
            "</body></html>")


@app.get("/api/search")
def api_text(text: str | None = None, k: int = Query(10, ge=1, le=MAX_K), target: str | None = None,
             row: int | None = Query(None, ge=0), modality: str = "image") -> dict:
    target, found = _by_text(text, k, target, row, modality)
    return {"query": {"text": text, "row": row, "modality": modality if row is not None else None, "target": target},
            "hits": found}


@app.post("/api/search")
def api_image(image: UploadFile = File(...), k: int = Form(10, ge=1, le=MAX_K),
              target: str | None = Form(None)) -> dict:
    target, found, _ = _by_image(image, k, target)
    return {"query": {"image": image.filename, "target": target}, "hits": found}


@app.get("/search", response_class=HTMLResponse)
def search_text(text: str | None = None, k: int = Query(10, ge=1, le=MAX_K), target: str | None = None,
                row: int | None = Query(None, ge=0), modality: str = "image") -> str:
    target, found = _by_text(text, k, target, row, modality)
    if row is None:
        return _page({"text": text}, target, found)
    index = app.state.index
    seen = describe(index, [row])[0]
    query = {"row": row, "labels": seen["labels"],
             **({"image": thumbnail_uri(index, row)} if modality == "image" else {"text": shown_text(seen)})}
    return _page(query, target, found)


@app.post("/search", response_class=HTMLResponse)
def search_image(image: UploadFile = File(...), k: int = Form(10, ge=1, le=MAX_K),
                 target: str | None = Form(None)) -> str:
    target, found, thumb = _by_image(image, k, target)
    return _page({"image": thumb}, target, found)
