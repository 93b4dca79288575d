import numpy as np
import pytest

from cfrh_cache.splits import make_split


def mir_labels(seed=0, n=20015, c=24):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, c)) < rng.uniform(0.02, 0.3, c)).astype(np.uint8)
    labels[labels.sum(1) == 0, rng.integers(0, c)] = 1
    return labels


def check_rules(split, n):
    assert np.intersect1d(split.query, split.database).size == 0
    np.testing.assert_array_equal(np.union1d(split.query, split.database), np.arange(n))
    assert np.isin(split.train, split.database).all() and np.isin(split.val, split.database).all()
    assert np.intersect1d(split.val, split.query).size == 0
    for rows in (split.query, split.database, split.train, split.val):
        assert np.unique(rows).size == rows.size


def test_djsrh_mirflickr_sizes_and_class_balance():
    labels = mir_labels()
    split = make_split(labels, "mirflickr", "djsrh", seed=0)
    assert split.sizes() == {"query": 2000, "database": 18015, "train": 5000, "val": 2000}
    check_rules(split, 20015)
    assert np.intersect1d(split.val, split.train).size == 0
    # DJSRH quotas: every label has at least 80 queries and 200 training rows (first: 160 / 400)
    q_counts, t_counts = labels[split.query].sum(0), labels[split.train].sum(0)
    assert q_counts[0] >= 160 and t_counts[0] >= 400
    assert (q_counts >= 80).all() and (t_counts >= 200).all()


def test_seeded_and_reproducible():
    labels = mir_labels()
    a, b = make_split(labels, "mirflickr", seed=1), make_split(labels, "mirflickr", seed=1)
    c = make_split(labels, "mirflickr", seed=2)
    np.testing.assert_array_equal(a.query, b.query)
    np.testing.assert_array_equal(a.val, b.val)
    assert not np.array_equal(a.query, c.query)


def test_nuswide_quota():
    labels = mir_labels(n=20000, c=10)
    split = make_split(labels, "nuswide", seed=0, reference_n=20000)
    assert split.sizes()["query"] == 2000 and split.sizes()["train"] == 5000
    assert (labels[split.query].sum(0) >= 200).all()


@pytest.mark.parametrize("dataset,n_query", [("mirflickr", 2000), ("nuswide", 2100), ("coco", 5000)])
def test_ucch_last_rows(dataset, n_query):
    labels = mir_labels(n=20015, c=10)
    split = make_split(labels, dataset, "ucch", seed=0, reference_n=20015)
    np.testing.assert_array_equal(split.query, np.arange(20015 - n_query, 20015))
    np.testing.assert_array_equal(split.train, np.setdiff1d(split.database, split.val))  # val held out
    check_rules(split, 20015)


def test_scaled_down_and_says_so():
    labels = mir_labels(n=3000, c=12)
    split = make_split(labels, "synth", seed=0, reference_n=20015)
    assert split.sizes()["query"] == round(2000 * 3000 / 20015)
    assert split.sizes()["train"] == round(5000 * 3000 / 20015)
    assert any("scaled" in note for note in split.notes)
    check_rules(split, 3000)


def test_fixed_splits():
    labels = np.eye(10, dtype=np.uint8)[np.arange(30) % 10]
    wiki = make_split(labels, "wiki", "djsrh", 0, {"query": np.arange(20, 30), "database": np.arange(20)}, 30)
    np.testing.assert_array_equal(wiki.train, np.setdiff1d(np.arange(20), wiki.val))  # train = database − val
    np.testing.assert_array_equal(wiki.query, np.arange(20, 30))
    check_rules(wiki, 30)
    coco = make_split(mir_labels(n=12000, c=5), "coco", "djsrh", 0,
                      {"query": np.arange(1000), "database": np.arange(1000, 12000)}, 12000)
    assert coco.sizes()["train"] == 10000 and np.isin(coco.train, coco.database).all()


def test_validation_rows_are_held_out_where_train_is_the_database():
    labels = np.eye(4, dtype=np.uint8)[np.arange(400) % 4]
    held = make_split(labels, "mirflickr", "ucch", 0, reference_n=20015)
    assert held.val_holdout and not np.intersect1d(held.val, held.train).size
    np.testing.assert_array_equal(np.union1d(held.train, held.val), held.database)
    kept = make_split(labels, "mirflickr", "ucch", 0, reference_n=20015, val_holdout=False)
    np.testing.assert_array_equal(kept.train, kept.database)
    assert not kept.val_holdout
    assert held.describe()["val_in_train"] is False and kept.describe()["val_in_train"] is True
    djsrh = make_split(labels, "mirflickr", "djsrh", 0, reference_n=20015)
    assert not djsrh.val_holdout and not np.intersect1d(djsrh.val, djsrh.train).size  # disjoint anyway
