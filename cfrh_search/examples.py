"""The qualitative figure of hashing papers, from the run folders: a few test queries chosen by
seed (never by how good they look), one row per method, the query on the left (its text for
text → image, its image for image → text), its top-k hits beside it framed green (sharing a
label with the query) or red, the Hamming distance under each. PNG and PDF per dataset, bit
length and direction, and a JSON of exactly what is drawn (for scripts and tests)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np

from cfrh.codes import pack_codes
from cfrh.mpl import pyplot
from cfrh.thumbnails import thumbnail
from cfrh_cache.store import Cache
from cfrh_search.pages import FRAME, relevance
from cfrh_search.topk import hamming_topk
from cfrh_train.results import arrow, group_runs, row_name


def choose_queries(n_query: int, count: int, seed: int) -> np.ndarray:
    """Positions among the test queries, drawn by seed alone."""
    return np.sort(np.random.default_rng(seed).choice(n_query, size=min(count, n_query), replace=False))


def example_data(runs: list[dict], cache: Cache, count: int, seed: int, k: int, direction: str) -> list[dict]:
    """What the figure shows: per chosen query and method, the top-k hits with distance and relevance."""
    names = cache.array("labels").attrs.get("label_names") or []
    labels = cache.read("labels")
    label_names = lambda row: [names[c] if c < len(names) else str(c) for c in np.flatnonzero(labels[row])]
    side_q, side_db = ("query_text", "database_image") if direction == "t2i" else ("query_image", "database_text")
    out = []
    first = np.load(Path(runs[0]["_folder"]) / "codes.npz")
    picks = choose_queries(len(first["query_index"]), count, seed)
    for pick in picks:
        for run in runs:
            codes = np.load(Path(run["_folder"]) / "codes.npz")
            q_row = int(codes["query_index"][pick])
            ids, dists = hamming_topk(pack_codes(codes[side_q][pick:pick + 1]), pack_codes(codes[side_db]),
                                      codes[side_q].shape[1], k)
            q_labels = label_names(q_row)
            hits = [{"row": int(codes["database_index"][i]), "distance": int(d)} for i, d in zip(ids[0], dists[0])]
            for hit in hits:
                hit["labels"] = label_names(hit["row"])
                hit["relevant"] = relevance(q_labels, hit["labels"])
            out.append({"method": run["method"], "query_row": q_row, "query_labels": q_labels, "hits": hits})
    return out


def _text_of(cache: Cache, row: int) -> str:
    if cache.has("text/raw/offsets"):
        return cache.read_strings("text/raw", [row])[0]
    words = cache.attrs.get("vocabulary", {}).get("words") or []
    if words:
        vector = cache.text_rows([row])[0]
        return " ".join(words[c] for c in np.flatnonzero(vector))
    return f"(text of row {row})"


def _image_of(cache: Cache, row: int):
    return thumbnail(cache.row_image(row))


def draw(data: list[dict], cache: Cache, direction: str, title: str, path: Path) -> list[Path]:
    """The figure (PNG and PDF) and its data (JSON) of ``example_data``."""
    plt = pyplot()
    k = max(len(entry["hits"]) for entry in data)
    fig, axes = plt.subplots(len(data), k + 1, figsize=(1.3 * (k + 1) + 1.2, 1.45 * len(data)), squeeze=False)
    for r, entry in enumerate(data):
        query_ax = axes[r][0]
        if direction == "t2i":
            query_ax.text(0.02, 0.5, "\n".join(textwrap.wrap(_text_of(cache, entry["query_row"]), 18)[:6]),
                          fontsize=6, va="center")
        else:
            query_ax.imshow(_image_of(cache, entry["query_row"]))
        query_ax.set_ylabel(entry["method"], fontsize=8, rotation=0, ha="right", va="center")
        for c in range(k):
            ax = axes[r][c + 1]
            if c >= len(entry["hits"]):
                ax.axis("off")
                continue
            hit = entry["hits"][c]
            if direction == "t2i":
                ax.imshow(_image_of(cache, hit["row"]))
            else:
                ax.text(0.03, 0.5, "\n".join(textwrap.wrap(_text_of(cache, hit["row"]), 16)[:6]), fontsize=5,
                        va="center")
            for spine in ax.spines.values():
                spine.set(edgecolor=FRAME[hit["relevant"]], linewidth=3)
            ax.set_xlabel(f"d={hit['distance']}", fontsize=6, labelpad=1)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{title} · {arrow(direction)} · green: shares a label with the query", fontsize=9)
    fig.tight_layout()
    paths = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, dpi=110)
    plt.close(fig)
    path.with_suffix(".json").write_text(json.dumps({"direction": direction, "title": title, "rows": data}, indent=1))
    return [*paths, path.with_suffix(".json")]


def example_figures(results: list[dict], cache_dir: str | Path, out_dir: str | Path, count: int, seed: int = 0,
                    k: int = 8) -> list[Path]:
    """Per dataset, split and bit length: one figure per direction, every method's first seed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for (dataset, protocol), runs in group_runs(results).items():
        cache = Cache.open(Path(cache_dir) / dataset)
        for bits in sorted({r["bits"] for r in runs}):
            chosen: dict[str, dict] = {}
            for r in sorted((r for r in runs if r["bits"] == bits), key=lambda r: r["seed"]):
                chosen.setdefault(row_name(r, runs), r)
            picked = list(chosen.values())
            for direction in ("t2i", "i2t"):
                data = example_data(picked, cache, count, seed, k, direction)
                name = f"{dataset}-{picked[0]['protocol']['name']}-s{picked[0]['protocol']['seed']}_{bits}bit_examples_{direction}"
                written += draw(data, cache, direction, f"{dataset} · {bits} bits", out_dir / name)
    return written
