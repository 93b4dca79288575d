"""Index, search and re-rank: against brute force, round trips, and queries hashed anew."""

import json

import numpy as np
import pytest
from conftest import exported_run, features
from typer.testing import CliRunner

from cfrh.codes import pack_codes
from cfrh.errors import CacheError
from cfrh_cache.readers import read_dataset
from cfrh_cache.store import Cache
from cfrh_search.hits import describe
from cfrh_search.index import Index
from cfrh_search.queries import Queries
from cfrh_search.rerank import rerank, rerank_evaluation
from cfrh_search.topk import hamming_topk
from cfrh_train.config import load
from cfrh_train.table import make_table

FAST = {"epochs": 4, "eval_every": 2, "hidden": 128, "device": "cpu", "bits": 24}


def brute_force(q, db, k):
    dist = (q.shape[1] - q.astype(int) @ db.T.astype(int)) // 2
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]  # ties by database position
    return order, np.take_along_axis(dist, order, 1)


@pytest.mark.parametrize("bits,k", [(7, 5), (16, 40), (64, 3), (130, 10), (8, 500)])
def test_hamming_topk_equals_brute_force(bits, k):
    rng = np.random.default_rng(bits)
    q, db = np.where(rng.random((17, bits)) < 0.5, -1, 1), np.where(rng.random((300, bits)) < 0.5, -1, 1)
    ids, dists = hamming_topk(pack_codes(q), pack_codes(db), bits, k)
    want_ids, want_d = brute_force(q, db, k)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(dists, want_d)


@pytest.fixture(scope="module")
def manifest_cache(synth_dir, tmp_path_factory):
    """The demo data read through its manifest: every image a file, every text a raw caption."""
    root = tmp_path_factory.mktemp("mcache")
    features("manifest", synth_dir, root, chunk_rows=64)
    return root


@pytest.fixture(scope="module")
def exported(manifest_cache, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    folder = exported_run(load("manifest", overrides=FAST), manifest_cache, "manifest", runs)
    return folder


def test_index_round_trip(exported, manifest_cache):
    index = Index(exported / "index")
    codes = np.load(exported / "codes.npz")
    np.testing.assert_array_equal(index.rows, codes["database_index"])
    for modality in ("image", "text"):
        bits = np.unpackbits(index.codes[modality].view(np.uint8), axis=1, bitorder="little")[:, :24]
        np.testing.assert_array_equal(bits.astype(np.int8) * 2 - 1, codes[f"database_{modality}"])
    assert index.meta["bits"] == 24 and index.meta["n"] == len(codes["database_index"])
    from safetensors.torch import load_file
    assert not any("decoder" in key for key in load_file(exported / "index" / "model.safetensors"))


def test_new_queries_hash_like_evaluation(exported, manifest_cache, synth_dir):
    """A database item's raw text and image file, hashed anew, give the codes evaluation gave it."""
    index = Index(exported / "index")
    codes = np.load(exported / "codes.npz")
    source = read_dataset("manifest", synth_dir)
    positions = [0, 7, 55]
    rows = codes["database_index"][positions]
    _, text_codes = Queries(index).hash(text=Queries(index).text_vectors([source.texts[r] for r in rows]))
    np.testing.assert_array_equal(np.where(text_codes >= 0, 1, -1), codes["database_text"][positions])
    features = Queries(index).image_features([source.images.paths[r] for r in rows])
    cached = Cache.open(manifest_cache / "manifest").read("image/cfrh-tiny-vit__none")[rows].astype(np.float32)
    np.testing.assert_allclose(features, cached, atol=2e-3, rtol=2e-3)
    image_codes, _ = Queries(index).hash(image=features)
    np.testing.assert_array_equal(np.where(image_codes >= 0, 1, -1), codes["database_image"][positions])


def test_index_refuses_a_rebuilt_cache(exported):

    index = Index(exported / "index")
    index.meta["cache_created"] = "2000-01-01T00:00:00+00:00"  # as if the cache were rebuilt since
    with pytest.raises(CacheError, match="rebuilt .* after this index was written"):
        describe(index, [0])


def test_index_of_an_older_layout_says_to_export_again(exported, tmp_path):
    """A weight of another shape (0.1 stored the BoW layer as nn.Linear does) and a 0.2 index
    (pickled model.pt, no safetensors) each get a clear error that says to export again."""
    import shutil

    from safetensors.torch import load_file, save_file
    old = tmp_path / "index"
    shutil.copytree(exported / "index", old)
    state = load_file(old / "model.safetensors")
    key = next(k for k in state if k.startswith("text.") and k.endswith("net.0.weight"))
    state[key] = state[key].t().contiguous()
    save_file(state, str(old / "model.safetensors"))
    meta = json.loads((old / "index.json").read_text())
    (old / "index.json").write_text(json.dumps({**meta, "cfrh_version": "0.1.0"}))
    with pytest.raises(CacheError, match=r"model.safetensors does not fit method 'cfrh'.*size mismatch.*"
                                         r"written by cfrh 0.1.0.*--export"):
        Queries(Index(old))
    (old / "model.safetensors").unlink()
    with pytest.raises(CacheError, match=r"no model.safetensors \(an index of an older layout\).*--export"):
        Index(old)


def test_search_equals_brute_force_over_the_index(exported):
    index = Index(exported / "index")
    codes = np.load(exported / "codes.npz")
    query = codes["query_image"][:4]
    hits = index.search(query, "text", k=25)
    want_ids, want_d = brute_force(query, codes["database_text"], 25)
    for q in range(4):
        assert [h.row for h in hits[q]] == codes["database_index"][want_ids[q]].tolist()
        assert [h.distance for h in hits[q]] == want_d[q].tolist()


def test_rerank_orders_candidates_by_the_finer_score(exported, manifest_cache):
    index = Index(exported / "index")
    feats = Cache.open(manifest_cache / "manifest").read("image/cfrh-tiny-vit__none").astype(np.float32)
    q = feats[3]
    n = len(index.rows)
    hits = rerank(index, Queries(index).hash(image=q[None])[0], "text", k=20, candidates=n, image_feature=q)
    cand = feats[index.rows]
    cos = cand @ q / (np.linalg.norm(cand, axis=1) * np.linalg.norm(q))
    # with every item a candidate, the order is the cosine order (ties: Hamming order)
    np.testing.assert_allclose([h.score for h in hits], np.sort(cos)[::-1][:20], rtol=1e-5)
    code = Queries(index).hash(text=np.ones((1, len(index.meta["vocabulary"])), np.float32))[1]
    text_hits = rerank(index, code, "image", k=10, candidates=50)
    signs = [np.where(Queries(index).hash(image=feats[[h.row]])[0] >= 0, 1, -1) @ code.ravel() for h in text_hits]
    np.testing.assert_allclose([h.score for h in text_hits], np.ravel(signs), rtol=1e-5)
    assert all(a.score >= b.score for a, b in zip(text_hits, text_hits[1:]))


def test_rerank_evaluation_reports_the_plain_map_and_goes_to_the_table(exported):
    index = Index(exported / "index")
    result = json.loads((exported / "result.json").read_text())
    queries = index.cache().read("split/query")
    rr = rerank_evaluation(index, Queries(index), queries, candidates=100, k=50)
    for d in ("i2t", "t2i"):
        assert rr[d]["map@50_hamming"] == pytest.approx(result["metrics"][d]["map@50"], abs=1e-12)
        assert 0 <= rr[d]["map@50_reranked"] <= 1 and rr[d]["ms_per_query_reranked"] > 0
    result["rerank"] = rr
    (exported / "result.json").write_text(json.dumps(result))
    md = make_table(exported.parents[3], figures=False)["markdown"].read_text()
    row = next(line for line in md.splitlines() if line.startswith("| cfrh + re-rank top-100"))
    assert f"{rr['t2i']['map@50_reranked']:.3f}" in row.split("|")[-2]
    assert "Re-ranking cost: cfrh + re-rank top-100:" in md
    assert "re-rank" not in md.split("## mAP@all")[1].split("## Figures")[0]  # mAP@50 only


def test_cli_search_json_and_errors(exported):
    from typer import Typer

    from cfrh_cli.search import search_command
    app = Typer()
    app.command()(search_command)
    source_text = "red circle"
    out = CliRunner().invoke(app, [str(exported), "--text", source_text, "-k", "4", "--json"])
    assert out.exit_code == 0, out.output
    payload = json.loads(out.output.strip().splitlines()[-1])
    assert len(payload["hits"]) == 4 and payload["query"]["target"] == "image"
    assert all({"rank", "row", "distance", "labels", "image", "text"} <= set(h) for h in payload["hits"])
    assert [h["distance"] for h in payload["hits"]] == sorted(h["distance"] for h in payload["hits"])
    row = int(np.load(exported / "codes.npz")["database_index"][5])
    for modality in ("image", "text"):  # a database row as the query finds itself at distance 0
        same = CliRunner().invoke(app, [str(exported), "--row", str(row), "--modality", modality,
                                        "--target", modality, "-k", "30", "--json"])
        assert same.exit_code == 0, same.output
        hits = json.loads(same.output.strip().splitlines()[-1])["hits"]
        assert any(h["row"] == row and h["distance"] == 0 for h in hits)
    both = CliRunner().invoke(app, [str(exported), "--text", "x", "--row", "3"])
    assert both.exit_code == 1 and "exactly one query" in both.output
    missing = CliRunner().invoke(app, [str(exported), "--image", str(exported / "nope.jpg")])
    assert missing.exit_code == 1 and "nope.jpg" in missing.output
    meta = json.loads((exported / "index" / "index.json").read_text())
    (exported / "index" / "index.json").write_text(json.dumps({**meta, "vocabulary": None}))
    try:
        no_vocab = CliRunner().invoke(app, [str(exported), "--text", "red"])
        assert no_vocab.exit_code == 1 and "vocabulary is not known" in no_vocab.output
    finally:
        (exported / "index" / "index.json").write_text(json.dumps(meta))


def test_topk_with_heavy_ties_equals_a_stable_sort():
    """Many exact duplicates (the kept buffer must grow) and k beyond them: ties by position."""
    rng = np.random.default_rng(4)
    base = np.where(rng.random((40, 64)) < 0.5, 1, -1).astype(np.int8)
    db = np.repeat(base, 900, axis=0)[rng.permutation(36000)]
    q = base[:5]
    ids, dists = hamming_topk(pack_codes(q), pack_codes(db), 64, 1500)
    want_ids, want_d = brute_force(q, db, 1500)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(dists, want_d)


@pytest.mark.parametrize("bits,n_query,k", [(32, 70, 50), (64, 33, 7), (128, 5, 20), (200, 40, 60)])
def test_topk_over_many_tiles_and_query_blocks_equals_a_stable_sort(bits, n_query, k):
    """A database of several tiles (one partial), query blocks with a partial last one, codes of
    1 to 4 words; exact copies of some queries, so the threshold reaches 0 with k items kept."""
    from cfrh_search.topk import TILE
    rng = np.random.default_rng(bits + n_query)
    q = np.where(rng.random((n_query, bits)) < 0.5, 1, -1).astype(np.int8)
    db = np.where(rng.random((3 * TILE + 77, bits)) < 0.5, 1, -1).astype(np.int8)
    db[rng.choice(db.shape[0], k + 3, replace=False)] = q[0]  # query 0: more than k items at distance 0
    ids, dists = hamming_topk(pack_codes(q), pack_codes(db), bits, k)
    want_ids, want_d = brute_force(q, db, k)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(dists, want_d)
    assert (dists[0] == 0).all()
