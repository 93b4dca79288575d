"""A search's hits as one self-contained HTML page: thumbnails embedded, text, labels, Hamming
distance, and a green or red frame where the query's labels are known (a database row as the
query). Each hit carries its row, rank, distance and relevance as ``data-`` attributes, so a
script (or a test) reads the page as data."""

from __future__ import annotations

from html import escape

FRAME = {True: "#1a9850", False: "#d73027", None: "#999999"}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.query { display: flex; gap: 1em; align-items: flex-start; margin-bottom: 1em; }
.hits { display: flex; flex-wrap: wrap; gap: 0.8em; }
.hit { width: 150px; border: 4px solid; padding: 4px; font-size: 12px; }
.hit img, .query img { width: 140px; height: 140px; object-fit: contain; display: block; }
.text { max-height: 7em; overflow: hidden; }
.labels { color: #555; }
"""


def search_form() -> str:
    """The served page's search boxes: a text query, and an image upload (``cfrh serve``)."""
    return """<form id='text-form' action='search' method='get'>
  <input id='text' name='text' size='50' placeholder='a text query, e.g. red circle'>
  <input name='k' type='number' value='10' min='1' max='1000'> <button id='go' type='submit'>search images</button>
</form>
<form id='row-form' action='search' method='get' style='margin-top: 1em'>
  <input id='row' name='row' type='number' min='0' placeholder='a cache row'>
  <select name='modality'><option value='image'>its image</option><option value='text'>its text</option></select>
  <input name='k' type='number' value='10' min='1' max='1000'> <button type='submit'>search the other side</button>
</form>
<form id='image-form' action='search' method='post' enctype='multipart/form-data' style='margin-top: 1em'>
  <input id='image' name='image' type='file' accept='image/*'>
  <input name='k' type='number' value='10' min='1' max='1000'> <button type='submit'>search texts</button>
</form>"""


def tie_groups(distances: list[int]) -> list[tuple[int, int]]:
    """Per hit, the first and last rank (1-based) of the hits at its distance: Hamming ties are
    common, and a page should not pretend that rank 3 is nearer than rank 4 at the same distance."""
    out, start = [], 0
    for i in range(1, len(distances) + 1):
        if i == len(distances) or distances[i] != distances[start]:
            out += [(start + 1, i)] * (i - start)
            start = i
    return out


def relevance(query_labels: list[str] | None, hit_labels: list[str]) -> bool | None:
    """The field's rule: relevant when query and item share a label (None: the query has none known)."""
    if query_labels is None:
        return None
    return bool(set(query_labels) & set(hit_labels))


def hits_page(title: str, query: dict, hits: list[dict], form: bool = False) -> str:
    """``query``: {text?, image (data URI)?, row?, labels?}; each hit: {rank, row, distance, labels,
    text?, image (data URI)?}. ``form``: the search boxes above the hits (a served page). Returns
    the page; every text it shows is escaped."""
    q_labels = query.get("labels")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>", search_form() if form else "",
             "<div class='query' id='query'>"]
    if query.get("image"):
        parts.append(f"<img alt='query image' src='{escape(query['image'])}'>")
    described = [f"<b>query</b> {escape(query['text'])}" if query.get("text") else "<b>query</b>"]
    if query.get("row") is not None:
        described.append(f"row {query['row']}")
    if q_labels is not None:
        described.append(f"labels: {escape(', '.join(q_labels))}")
    parts += ["<div>" + "<br>".join(described) + "</div>", "</div>", "<div class='hits'>"]
    ties = tie_groups([h["distance"] for h in hits])
    for hit, (first, last) in zip(hits, ties):
        rel = relevance(q_labels, hit["labels"])
        state = {True: "relevant", False: "irrelevant", None: "unknown"}[rel]
        parts.append(f"<figure class='hit {state}' data-row='{hit['row']}' data-rank='{hit['rank']}' "
                     f"data-distance='{hit['distance']}' data-relevant='{state}' data-tie='{first}-{last}' "
                     f"style='border-color: {FRAME[rel]}'>")
        if hit.get("image"):
            parts.append(f"<img alt='row {hit['row']}' src='{escape(hit['image'])}'>")
        if hit.get("text"):
            parts.append(f"<div class='text'>{escape(hit['text'])}</div>")
        tied = f" · tied #{first}–{last} (their order is by row)" if last > first else ""
        parts.append(f"<figcaption>#{hit['rank']} · row {hit['row']} · distance {hit['distance']}{tied}"
                     f"<div class='labels'>{escape(', '.join(hit['labels']))}</div></figcaption></figure>")
    parts.append("</div></body></html>")
    return "\n".join(parts)
