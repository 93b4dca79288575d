"""See what the codes retrieve (issue #18): the example figure's data and the HTML page, checked
against an independent ranking of the stored codes and an independent relevance."""

import json
import os
import re

import numpy as np
import pytest
from conftest import exported_run, trio
from typer.testing import CliRunner

from cfrh.codes import pack_codes
from cfrh_cache.readers.synth import write_mat73
from cfrh_cache.store import Cache, row_image
from cfrh_cli import search_app
from cfrh_search import ann
from cfrh_search.examples import choose_queries, example_figures
from cfrh_search.index import Index, IndexSpec
from cfrh_search.queries import Queries
from cfrh_search.topk import hamming_topk
from cfrh_train.config import load
from cfrh_train.missing_runs import ensure_runs
from cfrh_train.results import collect_runs


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


@pytest.mark.slow
def test_example_figure_shows_seeded_queries_and_each_methods_true_top_k(two_runs, synth_cache):
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
    folder = exported_run(load("synth", overrides={"method": "lsh", "bits": 16, "device": "cpu"}), synth_cache.parent, "synth",
                 tmp_path / "runs")
    page = tmp_path / "hits.html"
    out = CliRunner().invoke(search_app, [str(folder), "--row", "7", "-k", "5", "--target", "image", "--html", str(page)])
    assert out.exit_code == 0, out.output
    html = page.read_text()
    figures = re.findall(r"<figure class='hit (\w+)' data-row='(\d+)' data-rank='(\d+)' data-distance='(\d+)'", html)
    assert len(figures) == 5 and [int(f[2]) for f in figures] == [1, 2, 3, 4, 5]
    labels = Cache.open(synth_cache).read("labels")
    for state, row, _, _ in figures:
        assert state == ("relevant" if (labels[7] & labels[int(row)]).any() else "irrelevant")
    index = Index(folder / "index")
    hits = index.search(Queries(index).hash(image=index.rows_of([7], "image"))[0], "image", 5)[0]
    assert [int(f[1]) for f in figures] == [h.row for h in hits]
    assert html.count("data:image/jpeg;base64,") == 6  # the query image and five hits, embedded


def test_thumbnails_of_an_image_array_are_its_rows(tmp_path):

    pixels = trio(tmp_path, lambda p, x: write_mat73(p, {"IAll": x.transpose(1, 2, 3, 0)}), n=6, side=5)
    place = {"kind": "array", "file": "mirflickr25k-iall.mat", "key": "IAll", "layout": "HWCN"}
    np.testing.assert_array_equal(np.asarray(row_image(place, str(tmp_path), 4)), pixels[4])
    assert row_image(place, str(tmp_path / "moved"), 4) is None


def structured_codes(n=4000, bits=64, centres=40, flip=0.06, seed=0):
    """Codes drawn from a few centres with bit noise, as trained codes cluster (so ANN has structure)."""
    rng = np.random.default_rng(seed)
    c = rng.random((centres, bits)) < 0.5
    assign = rng.integers(0, centres, n)
    bits_ = c[assign] ^ (rng.random((n, bits)) < flip)
    return np.where(bits_, 1, -1).astype(np.int8)


@pytest.mark.parametrize("kind,params,floor", [("ivf", {"nlist": 32, "nprobe": 8}, 0.9),
                                               ("hnsw", {"M": 16, "ef_construction": 80, "ef_search": 128}, 0.9),
                                               ("mih", {"nhash": 4, "b": 16, "nflip": 2}, 0.8)])
def test_ann_results_are_database_items_at_their_true_distance_with_recall(kind, params, floor):
    pytest.importorskip("faiss")
    both = structured_codes(n=4060)  # queries from the same centres as the database, as test queries are
    db, q = both[:4000], both[4000:]
    words, q_words = pack_codes(db), pack_codes(q)
    shards = [(a, ann.build(words[a:b], kind, params)) for a, b in ann.shard_bounds(len(db), 2)]
    ids, dists = ann.search(shards, q_words, 50)
    true = (64 - q.astype(int) @ db.T.astype(int)) // 2
    _, exact_d = hamming_topk(q_words, words, 64, 50)
    recall = []
    for j in range(len(q)):
        got = ids[j][ids[j] >= 0]
        assert np.all((got >= 0) & (got < len(db))) and len(set(got)) == len(got)
        np.testing.assert_array_equal(dists[j][: len(got)], true[j, got])  # the distances are the true ones
        assert np.all(np.diff(dists[j][: len(got)]) >= 0)  # nearest first
        # recall@50 by distance: items as near as the exact 50th count (ties make any of them right)
        recall.append(min(50, int((dists[j][: len(got)] <= exact_d[j, -1]).sum())) / 50)
    assert np.mean(recall) >= floor, (kind, np.mean(recall))


def test_mih_range_search_is_exact_within_its_radius():
    pytest.importorskip("faiss")
    both = structured_codes(n=3025, seed=2)
    db, q = both[:3000], both[3000:]
    params = {"nhash": 4, "b": 16, "nflip": 1}  # exact up to radius 4 × 2 − 1 = 7
    shards = [(a, ann.build(pack_codes(db)[a:b], "mih", params)) for a, b in ann.shard_bounds(len(db), 3)]
    true = (64 - q.astype(int) @ db.T.astype(int)) // 2
    for radius in (3, 7):
        found = ann.range_search(shards, pack_codes(q), radius)
        for j in range(len(q)):
            np.testing.assert_array_equal(found[j], np.flatnonzero(true[j] <= radius))


def test_exported_ann_and_sharded_indexes_answer_like_the_exact_one(synth_cache, tmp_path):
    config = load("synth", overrides={"method": "lsh", "bits": 32, "device": "cpu"})
    exact = Index(exported_run(config, synth_cache.parent, "synth", tmp_path / "a") / "index")
    sharded = Index(exported_run(config, synth_cache.parent, "synth", tmp_path / "b", spec=IndexSpec("exact", None, 3)) / "index")
    code = Queries(exact).hash(image=exact.rows_of([3, 9], "image"))[0]
    assert [[(h.row, h.distance) for h in hits] for hits in sharded.search(code, "text", 20)] == \
        [[(h.row, h.distance) for h in hits] for hits in exact.search(code, "text", 20)]
    pytest.importorskip("faiss")
    hnsw = Index(exported_run(config, synth_cache.parent, "synth", tmp_path / "c", spec=IndexSpec("hnsw", {"ef_search": 256}, 2)) / "index")
    assert hnsw.meta["ann"]["kind"] == "hnsw" and hnsw.meta["ann"]["params"]["ef_search"] == 256
    want = exact.search(code, "text", 10)
    got = hnsw.search(code, "text", 10)
    assert [h.distance for h in got[0]] == [h.distance for h in want[0]]  # a small database: HNSW finds them all


@pytest.fixture(scope="module")
def served_run(synth_cache, tmp_path_factory):
    config = load("synth", overrides={"method": "lsh", "bits": 16, "device": "cpu"})
    return exported_run(config, synth_cache.parent, "synth", tmp_path_factory.mktemp("served"))


def test_serve_api_answers_text_and_image_queries(served_run, synth_dir):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from cfrh_search.serve import load as create_app
    client = TestClient(create_app(served_run))
    assert "search images" in client.get("/").text
    index = Index(served_run / "index")
    word = index.meta["vocabulary"][0]
    got = client.get("/api/search", params={"text": word, "k": 4}).json()
    want = index.search(Queries(index).hash(text=Queries(index).text_vectors([word]))[1], "image", 4)[0]
    assert [h["row"] for h in got["hits"]] == [h.row for h in want] and got["query"]["target"] == "image"
    assert client.get("/api/search", params={"text": "zzzz qqqq"}).status_code == 400
    image = sorted((synth_dir / "images").glob("*.jpg"))[3]
    with open(image, "rb") as f:
        page = client.post("/search", files={"image": ("q.jpg", f, "image/jpeg")}, data={"k": "3"}).text
    assert page.count("<figure class='hit") == 3


def _chromium() -> str | None:
    import shutil
    import subprocess
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and shutil.which("apt-get"):  # the test installs what it needs, where it can
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium",
                       shell=True, capture_output=True, timeout=600)
        found = shutil.which("chromium")
    return found


@pytest.mark.slow
def test_the_page_answers_a_query_in_a_real_browser(served_run):
    """Chromium (headless, through Playwright) types a query into the served page and sees hits."""
    pytest.importorskip("fastapi")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip("no Chromium could be installed here (apt-get install chromium)")
    import socket
    import threading

    import uvicorn

    from cfrh_search.serve import load as create_app
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(served_run), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        import time
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        word = Index(served_run / "index").meta["vocabulary"][1]
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/", timeout=30000)
            page.fill("#text", word)
            page.click("#go")
            page.wait_for_selector("figure.hit", timeout=30000)
            assert page.locator("figure.hit").count() == 10
            assert word in page.inner_text("#query")
            page.fill("#row", "7")  # the results page has the search boxes too: now a cache row's image
            page.click("#row-form button")
            page.wait_for_selector("#query img", timeout=30000)
            assert "row 7" in page.inner_text("#query") and page.locator("figure.hit").count() == 10
            ties = page.locator("figure.hit").evaluate_all("els => els.map(e => e.dataset.tie)")
            distances = page.locator("figure.hit").evaluate_all("els => els.map(e => Number(e.dataset.distance))")
            for i, tie in enumerate(ties):  # each hit names the ranks that share its distance
                first, last = map(int, tie.split("-"))
                assert distances[first - 1:last] == [distances[i]] * (last - first + 1)
            shot = os.environ.get("CFRH_DOCS_SCREENSHOT")  # how docs/img/search-page.png is made
            page.set_viewport_size({"width": 1100, "height": 900})
            page.screenshot(path=shot or str(served_run / "page.png"), full_page=False)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
