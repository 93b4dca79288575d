"""``cfrh serve RUN``: a small local web page over a run's search index (FastAPI + uvicorn, an
optional extra: ``pip install 'cfrh[serve]'``). Type a text or drop an image, see the hits as
``cfrh-search --html`` draws them; the index is loaded once, when the server starts.

    GET  /                         the page: a text box and an image upload
    GET  /search?text=…&k=10       the hits of a text query, as a page
    POST /search (image, k)        the hits of an uploaded image, as a page
    GET  /api/search?text=…&k=10   the same as JSON (``target`` image|text, default: the other side)
    POST /api/search (image, k)    likewise for an image
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time

import tempfile
from pathlib import Path

from cfrh.errors import CfrhError, ConfigError

FORM = """<!doctype html><html><head><meta charset='utf-8'><title>cfrh search · {title}</title></head>
<body style='font-family: system-ui, sans-serif; margin: 1.5em'><h1>{title}</h1>
<form id='text-form' action='search' method='get'>
  <input id='text' name='text' size='50' placeholder='a text query, e.g. red circle'>
  <input name='k' type='number' value='10' min='1' max='200'> <button id='go' type='submit'>search images</button>
</form>
<form id='image-form' action='search' method='post' enctype='multipart/form-data' style='margin-top: 1em'>
  <input id='image' name='image' type='file' accept='image/*'>
  <input name='k' type='number' value='10' min='1' max='200'> <button type='submit'>search texts</button>
</form></body></html>"""


def create_app(run_folder: str | Path, device: str = "cpu"):
    """The app of one run's index (``<run>/index``), loaded now."""
    try:
        from fastapi import FastAPI, File, Form, HTTPException, Query, UploadFile
        from fastapi.responses import HTMLResponse
    except ImportError:
        raise ConfigError("cfrh serve needs FastAPI and uvicorn (pip install 'cfrh[serve]')") from None
    from cfrh_train.pages import hits_page
    from cfrh_train.search import Index
    folder = Path(run_folder)
    index = Index(folder / "index" if (folder / "index" / "index.json").is_file() else folder, device)
    title = f"{index.meta['method']} {index.bits} bits · {index.meta['dataset']}"
    app = FastAPI(title=f"cfrh · {title}")

    def hits(code, source: str, target: str | None, k: int) -> tuple[str, list[dict]]:
        target = target or ("text" if source == "image" else "image")
        if target not in ("image", "text"):
            raise ConfigError(f"target {target!r}: expected image or text")
        found = index.search(code, target, k)[0]
        described = index.describe([h.row for h in found])
        return target, [{"rank": i + 1, "distance": h.distance, **d} for i, (h, d) in enumerate(zip(found, described))]

    def by_text(text: str, k: int, target: str | None):
        try:
            return hits(index.hash(text=index.text_vectors([text]))[1], "text", target, k)
        except CfrhError as exc:
            raise HTTPException(400, str(exc)) from None

    def by_image(upload, k: int, target: str | None):
        with tempfile.NamedTemporaryFile(suffix=Path(upload.filename or "x.jpg").suffix) as tmp:
            tmp.write(upload.file.read())
            tmp.flush()
            try:
                feature = index.image_features([tmp.name])
                target, found = hits(index.hash(image=feature)[0], "image", target, k)
                return target, found, index.thumbnail(file=tmp.name)
            except CfrhError as exc:
                raise HTTPException(400, str(exc)) from None

    def page(query: dict, target: str, found: list[dict]) -> str:
        shown = [{**h, "image": index.thumbnail(h["row"]) if target == "image" else None,
                  "text": (h.get("text") or " ".join(h.get("text_words", []))) if target == "text" else None}
                 for h in found]
        return hits_page(title, query, shown)

    @app.get("/", response_class=HTMLResponse)
    def home() -> str:
        return FORM.format(title=title)

    @app.get("/api/search")
    def api_text(text: str, k: int = Query(10, ge=1, le=1000), target: str | None = None) -> dict:
        target, found = by_text(text, k, target)
        return {"query": {"text": text, "target": target}, "hits": found}

    @app.post("/api/search")
    def api_image(image: UploadFile = File(...), k: int = Form(10), target: str | None = Form(None)) -> dict:
        target, found, _ = by_image(image, k, target)
        return {"query": {"image": image.filename, "target": target}, "hits": found}

    @app.get("/search", response_class=HTMLResponse)
    def search_text(text: str, k: int = Query(10, ge=1, le=1000), target: str | None = None) -> str:
        target, found = by_text(text, k, target)
        return page({"text": text}, target, found)

    @app.post("/search", response_class=HTMLResponse)
    def search_image(image: UploadFile = File(...), k: int = Form(10), target: str | None = Form(None)) -> str:
        target, found, thumb = by_image(image, k, target)
        return page({"image": thumb}, target, found)

    return app


def serve(run_folder: str | Path, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu") -> None:
    import uvicorn
    uvicorn.run(create_app(run_folder, device), host=host, port=port, log_level="warning")
