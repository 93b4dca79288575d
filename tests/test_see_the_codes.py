"""See what the codes retrieve (issue #18): the example figure's data and the HTML page, checked
against an independent ranking of the stored codes and an independent relevance."""

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from cfrh.thumbnails import row_image
from cfrh_cache.store import Cache
from cfrh_train.table import collect_runs, ensure_runs


@pytest.fixture(scope="module")
def two_runs(synth_cache, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    ensure_runs(["synth"], ["lsh", "random"], [16], [0], synth_cache.parent, runs, "cpu", False, log=lambda m: None)
    return runs


def brute_topk(q, db, k):
    """Stable ranking by Hamming distance, ties by database position."""
    dist = (q.shape[1] - q.astype(int) @ db.T.astype(int))[0] // 2
    order = np.argsort(dist, kind="stable")[:k]
    return order, dist[order]


def test_example_figure_shows_seeded_queries_and_each_methods_true_top_k(two_runs, synth_cache):
    from cfrh_train.examples import choose_queries, example_figures
    paths = example_figures(collect_runs(two_runs), synth_cache.parent, two_runs / "figures", 3, seed=5, k=6)
    assert sorted(p.suffix for p in paths) == [".json", ".json", ".pdf", ".pdf", ".png", ".png"]
    cache = Cache.open(synth_cache)
    labels = cache.read("labels")
    for direction, (side_q, side_db) in (("t2i", ("query_text", "database_image")),
                                          ("i2t", ("query_image", "database_text"))):
        data = json.loads(next(p for p in paths if p.name.endswith(f"{direction}.json")).read_text())
        assert [r["method"] for r in data["rows"]] == ["lsh", "random"] * 3  # one row per method, per query
        for entry in data["rows"]:
            codes = np.load(two_runs / "synth" / entry["method"] / "16bit" / "seed0" / "codes.npz")
            picks = choose_queries(len(codes["query_index"]), 3, 5)
            pick = int(np.flatnonzero(codes["query_index"] == entry["query_row"])[0])
            assert pick in picks
            order, dist = brute_topk(codes[side_q][pick:pick + 1], codes[side_db], 6)
            assert [h["row"] for h in entry["hits"]] == codes["database_index"][order].tolist()
            assert [h["distance"] for h in entry["hits"]] == dist.tolist()
            for hit in entry["hits"]:  # green exactly where query and hit share a label
                assert hit["relevant"] == bool((labels[entry["query_row"]] & labels[hit["row"]]).any())


def test_search_html_page_has_the_hits_with_their_frames(two_runs, synth_cache, tmp_path):
    from cfrh.cli import search_app
    from cfrh_train.config import load
    from cfrh_train.search import Index
    from cfrh_train.train import run
    folder = run(load("synth", overrides={"method": "lsh", "bits": 16, "device": "cpu"}), synth_cache.parent, "synth",
                 tmp_path / "runs", progress=False, export=True)
    page = tmp_path / "hits.html"
    out = CliRunner().invoke(search_app, [str(folder), "--row", "7", "-k", "5", "--target", "image", "--html", str(page)])
    assert out.exit_code == 0, out.output
    html = page.read_text()
    figures = re.findall(r"<figure class='hit (\w+)' data-row='(\d+)' data-rank='(\d+)' data-distance='(\d+)'", html)
    assert len(figures) == 5 and [int(f[2]) for f in figures] == [1, 2, 3, 4, 5]
    labels = Cache.open(synth_cache).read("labels")
    for state, row, _, _ in figures:
        assert state == ("relevant" if (labels[7] & labels[int(row)]).any() else "irrelevant")
    hits = Index(folder / "index").search(Index(folder / "index").hash(
        image=Index(folder / "index").rows_of([7], "image"))[0], "image", 5)[0]
    assert [int(f[1]) for f in figures] == [h.row for h in hits]
    assert html.count("data:image/jpeg;base64,") == 6  # the query image and five hits, embedded


def test_thumbnails_of_an_image_array_are_its_rows(tmp_path):
    from test_real_world_input import trio

    from cfrh_cache.readers.synth import write_mat73
    pixels = trio(tmp_path, lambda p, x: write_mat73(p, {"IAll": x.transpose(1, 2, 3, 0)}), n=6, side=5)
    place = {"kind": "array", "file": "mirflickr25k-iall.mat", "key": "IAll", "layout": "HWCN"}
    np.testing.assert_array_equal(np.asarray(row_image(place, str(tmp_path), 4)), pixels[4])
    assert row_image(place, str(tmp_path / "moved"), 4) is None
