"""Every metric against a slow, obviously correct reference written here."""

import itertools

import numpy as np
import pytest

from cfrh_train.metrics import evaluate


def ref_calculate_top_map(qB, rB, qL, rL, topk):
    """The DJSRH lineage's calculate_top_map, with a stable sort (ties by database index)."""
    total = 0.0
    for i in range(qB.shape[0]):
        gnd = (qL[i] @ rL.T > 0).astype(np.float64)
        hamm = 0.5 * (qB.shape[1] - qB[i] @ rB.T)
        ind = np.argsort(hamm, kind="stable")
        tgnd = gnd[ind][:topk]
        tsum = int(tgnd.sum())
        if tsum == 0:
            continue
        count = np.linspace(1, tsum, tsum)
        tindex = np.asarray(np.where(tgnd == 1)) + 1.0
        total += np.mean(count / tindex)
    return total / qB.shape[0]


def ap_of_order(rel, k):
    rel = rel[:k]
    hits = np.cumsum(rel)
    return float((rel * hits / np.arange(1, len(rel) + 1)).sum() / hits[-1]) if hits[-1] else 0.0


def ref_tie_avg(dist, rel, k):
    """Average AP over every order of the tied items (enumerated)."""
    groups = [np.flatnonzero(dist == d) for d in np.unique(dist)]
    total, count = 0.0, 0
    for perms in itertools.product(*[list(itertools.permutations(g)) for g in groups]):
        order = np.concatenate(perms)
        total += ap_of_order(rel[order], k)
        count += 1
    return total / count


def ref_precision_at(dist, rel, p):
    """Mean over queries of the relevant share of the first p items, ties by database index."""
    return np.mean([rel[i][np.argsort(dist[i], kind="stable")][:p].mean() for i in range(len(dist))])


def codes(rng, n, k):
    return np.where(rng.random((n, k)) < 0.5, -1, 1).astype(np.int8)


def test_sign_zero_is_plus_one():
    from cfrh.codes import pack_codes
    from cfrh_search.topk import hamming_topk
    _, dist = hamming_topk(pack_codes(np.array([[0.0, -0.5]])), pack_codes(np.array([[1.0, -1.0]])), 2, 1)
    assert dist[0, 0] == 0


@pytest.mark.parametrize("bits,topk", [(4, 50), (8, 10), (16, 50), (32, 5000)])
def test_map_at_k_matches_calculate_top_map(bits, topk):
    rng = np.random.default_rng(bits)
    q, db = codes(rng, 40, bits), codes(rng, 300, bits)
    ql, dl = (rng.random((40, 5)) < 0.25).astype(np.uint8), (rng.random((300, 5)) < 0.25).astype(np.uint8)
    ql[0] = 0  # a query with no relevant item counts 0 and stays in the mean
    got = evaluate(q, db, ql, dl, k=topk)
    assert got[f"map@{topk}"] == pytest.approx(ref_calculate_top_map(q, db, ql, dl, topk), abs=1e-12)
    assert got["map@all"] == pytest.approx(ref_calculate_top_map(q, db, ql, dl, 300), abs=1e-12)


def test_precision_at_k_and_pr_curve():
    rng = np.random.default_rng(5)
    q, db = codes(rng, 12, 8), codes(rng, 200, 8)
    ql, dl = (rng.random((12, 4)) < 0.4).astype(np.uint8), (rng.random((200, 4)) < 0.4).astype(np.uint8)
    ql[:, 0] = 1
    got = evaluate(q, db, ql, dl, k=50, p_at=(1, 10, 100))
    dist = (8 - q.astype(int) @ db.T.astype(int)) // 2
    rel = (ql @ dl.T) > 0
    for p in (1, 10, 100):
        assert got["p@k"][str(p)] == pytest.approx(ref_precision_at(dist, rel, p))
    for r in (0, 3, 8):
        within = dist <= r
        precisions = [rel[i][within[i]].mean() for i in range(12) if within[i].any()]
        recalls = [rel[i][within[i]].sum() / rel[i].sum() for i in range(12)]
        assert got["pr_curve"]["precision"][r] == pytest.approx(np.mean(precisions))
        assert got["pr_curve"]["recall"][r] == pytest.approx(np.mean(recalls))


@pytest.mark.parametrize("seed", range(6))
def test_tie_averaged_ap_enumerates_orders(seed):
    rng = np.random.default_rng(seed)
    bits = 2  # 3 distance values over 7 items: heavy ties, still enumerable
    q, db = codes(rng, 3, bits), codes(rng, 7, bits)
    ql, dl = (rng.random((3, 3)) < 0.5).astype(np.uint8), (rng.random((7, 3)) < 0.5).astype(np.uint8)
    dist = (bits - q.astype(int) @ db.T.astype(int)) // 2
    rel = (ql @ dl.T) > 0
    for k in (3, 7):
        got = evaluate(q, db, ql, dl, k=k)
        expected = np.mean([ref_tie_avg(dist[i], rel[i], k) for i in range(3)])
        assert got[f"map@{k}_tie_avg"] == pytest.approx(expected, abs=1e-12)
    assert got["map@all_tie_avg"] == pytest.approx(np.mean([ref_tie_avg(dist[i], rel[i], 7) for i in range(3)]))


def test_hand_computed_case():
    # one query; database distances 0,1,1,2 with relevance 0,1,0,1 (ties by index: item1 before item2)
    q = np.array([[1, 1]])
    db = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]])
    ql = np.array([[1, 0]])
    dl = np.array([[0, 1], [1, 0], [0, 1], [1, 1]])
    got = evaluate(q, db, ql, dl, k=2)
    assert got["map@2"] == pytest.approx(1 / 2)  # one hit at rank 2: (1/2)/1
    assert got["map@all"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    # tie-averaged @all: the tied pair puts the hit at rank 2 or 3 with equal chance
    assert got["map@all_tie_avg"] == pytest.approx(((1 / 2 + 2 / 4) / 2 + (1 / 3 + 2 / 4) / 2) / 2)


def test_several_code_and_label_words():
    """130 bits (three 64-bit words) and 70 classes (two): the packing edges of the kernel."""
    rng = np.random.default_rng(11)
    q, db = codes(rng, 9, 130), codes(rng, 400, 130)
    ql, dl = (rng.random((9, 70)) < 0.03).astype(np.uint8), (rng.random((400, 70)) < 0.03).astype(np.uint8)
    ql[:, 69], dl[::7, 69] = 1, 1  # relevance that only the second label word sees
    got = evaluate(q, db, ql, dl, k=20, p_at=(1, 10))
    qi, dbi = q.astype(int), db.astype(int)  # int8 products would overflow at 130 bits
    assert got["map@20"] == pytest.approx(ref_calculate_top_map(qi, dbi, ql, dl, 20), abs=1e-12)
    assert got["map@all"] == pytest.approx(ref_calculate_top_map(qi, dbi, ql, dl, 400), abs=1e-12)
    dist = (130 - qi @ dbi.T) // 2
    rel = (ql.astype(int) @ dl.T.astype(int)) > 0
    assert got["p@k"]["10"] == pytest.approx(ref_precision_at(dist, rel, 10))


def test_agrees_with_torchmetrics_average_precision():
    """An independent implementation: torchmetrics' retrieval AP (AP@k normalised by the hits in
    the top k, as calculate_top_map) on a ranking by distance with ties by database index."""
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.functional.retrieval")
    rng = np.random.default_rng(7)
    bits, n_q, n_db = 16, 30, 200
    q, db = codes(rng, n_q, bits), codes(rng, n_db, bits)
    ql, dl = (rng.random((n_q, 5)) < 0.3).astype(np.uint8), (rng.random((n_db, 5)) < 0.3).astype(np.uint8)
    got = evaluate(q, db, ql, dl, k=50)
    dist = (bits - q.astype(int) @ db.T.astype(int)) // 2
    score = (bits + 1 - dist) * n_db + (n_db - np.arange(n_db))  # > 0, distinct: distance, then index
    rel = (ql.astype(int) @ dl.T.astype(int)) > 0
    for k, key in ((50, "map@50"), (None, "map@all")):
        theirs = np.mean([float(tm.retrieval_average_precision(torch.tensor(score[i], dtype=torch.float64),
                                                               torch.tensor(rel[i]), top_k=k)) for i in range(n_q)])
        assert got[key] == pytest.approx(theirs, abs=1e-6)  # torchmetrics sums in float32
