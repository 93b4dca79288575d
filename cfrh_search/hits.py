"""What a person sees of a hit: its labels, its text (or the BoW's words), where its image lies,
and the image as an embedded thumbnail."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cfrh.images import open_rgb
from cfrh.thumbnails import data_uri, thumbnail
from cfrh_search.index import Hit, Index


def describe(index: Index, rows: list[int]) -> list[dict]:
    """Per cache row: labels, the text's words, the image's path or place."""
    cache = index.cache()
    names = cache.array("labels").attrs.get("label_names") or []
    labels = cache.array("labels").get_orthogonal_selection((np.asarray(rows),))
    vectors = index.rows_of(rows, "text")
    words = index.meta.get("vocabulary") or []
    texts = cache.read_strings("text/raw", rows) if cache.has("text/raw/offsets") else None
    paths = cache.read_strings("meta/image_path", rows) if cache.has("meta/image_path/offsets") else None
    place = cache.attrs.get("images", {})
    out = []
    for i, (row, lab, vec) in enumerate(zip(rows, labels, vectors)):
        item = {"row": int(row), "labels": [names[c] if c < len(names) else str(c) for c in np.flatnonzero(lab)]}
        if words:
            item["text_words"] = [words[c] for c in np.flatnonzero(vec)]
        if texts is not None:
            item["text"] = texts[i]
        if paths is not None:
            item["image"] = paths[i]
        elif place.get("kind") == "array":
            item["image"] = f"{place['file']}:{place['key']}[{row}]"
        out.append(item)
    return out


def described_hits(index: Index, found: list[Hit]) -> list[dict]:
    """Hits as commands, pages and the API show them: rank, Hamming distance, the re-ranking score
    where re-ranked, and ``describe``'s view of the row."""
    described = describe(index, [h.row for h in found])
    return [{"rank": i + 1, "distance": h.distance, **({"score": h.score} if h.score is not None else {}), **d}
            for i, (h, d) in enumerate(zip(found, described))]


def shown_text(hit: dict) -> str:
    """A hit's text as a page shows it: the raw text, else the BoW's words."""
    return hit.get("text") or " ".join(hit.get("text_words", []))


def thumbnail_uri(index: Index, row: int | None = None, file: str | Path | None = None) -> str:
    """A cache row's image (or an image file) as an embedded JPEG thumbnail (``data:`` URI)."""
    return data_uri(thumbnail(open_rgb(file) if file is not None else index.cache().row_image(row)))


def for_page(index: Index, hits: list[dict], target: str) -> list[dict]:
    """Hits as ``pages.hits_page`` draws them: a thumbnail for image hits, the text for text hits."""
    return [{**h, "image": thumbnail_uri(index, h["row"]) if target == "image" else None,
             "text": shown_text(h) if target == "text" else None} for h in hits]
