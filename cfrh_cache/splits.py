"""Seeded protocol splits, stored in the cache so every run of every method uses the same rows.

Two protocols from the literature:

- ``djsrh`` (DJSRH, JDSH, CFRH, mAP@50): MIRFlickr/NUS-WIDE draw a class-balanced query set and
  a class-balanced training set inside the database (labels visited in order; MIRFlickr takes
  160+400 from the first label and 80+200 from each other, NUS-WIDE 200+500 per label), then
  top both up at random; database = all − query. COCO: the file's query/database, 10,000 random
  training rows. WIKI: query = test list, database = train = training list.
- ``ucch`` (UCCH, mAP@all): the last 2,000 (MIRFlickr), 2,100 (NUS-WIDE) or 5,000 (COCO) rows
  are the queries; train = database = the rest.

Both add a validation split carved from the database, never from the queries, for model
selection in stage 2. It is disjoint from train where train is a subset of the database. Where
the protocol trains on the whole database (UCCH, WIKI), the validation rows are held out of
training by default (``val_holdout``): inside train, their own pairs would sit in the searched
set and reward memorising; ``val_holdout=False`` keeps the protocol's train = database (the
methods are unsupervised, so no label reaches training either way). Datasets smaller than the benchmark
(the demo, small manifests) get every size scaled by N / 20,015, and the split says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse

PROTOCOLS = ("djsrh", "ucch")

# Per dataset: queries, training rows, and the DJSRH per-label quotas (first label, other labels).
DJSRH = {
    "mirflickr": dict(n_query=2000, n_train=5000, query_quota=(160, 80), train_quota=(400, 200)),
    "nuswide": dict(n_query=2000, n_train=5000, query_quota=(200, 200), train_quota=(500, 500)),
    "coco": dict(n_query=5000, n_train=10000),
}
UCCH_QUERIES = {"mirflickr": 2000, "nuswide": 2100, "coco": 5000}
BENCHMARK_N = 20015  # MIRFlickr's size: the scale of the default sizes for other datasets


@dataclass
class Split:
    query: np.ndarray
    database: np.ndarray
    train: np.ndarray
    val: np.ndarray
    protocol: str
    seed: int
    notes: list[str] = field(default_factory=list)

    def sizes(self) -> dict[str, int]:
        return {k: int(getattr(self, k).size) for k in ("query", "database", "train", "val")}

    val_holdout: bool = False

    def describe(self) -> dict:
        val_in_train = bool(np.isin(self.val, self.train).any())
        return {"protocol": self.protocol, "seed": self.seed, **{f"n_{k}": v for k, v in self.sizes().items()},
                "val_in_train": val_in_train, "val_holdout": self.val_holdout, "notes": self.notes}


def holdout_default(protocol: str, dataset: str) -> bool:
    """Whether validation rows leave training by default: where the protocol trains on the database."""
    return protocol == "ucch" or dataset == "wiki"


def make_split(labels: np.ndarray, dataset: str, protocol: str = "djsrh", seed: int = 0,
               fixed: dict[str, np.ndarray] | None = None, reference_n: int | None = None,
               val_holdout: bool | None = None) -> Split:
    """Draw the split of ``protocol`` for a dataset with these labels, deterministically from ``seed``.
    ``val_holdout`` (None: ``holdout_default``) takes the validation rows out of training."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown split protocol {protocol!r}; choose one of {PROTOCOLS}")
    rng = np.random.default_rng(seed)
    n = labels.shape[0]
    scale = min(1.0, n / (reference_n or BENCHMARK_N))
    notes = [] if scale == 1.0 else [f"sizes scaled by {scale:.3f} (N={n} < {reference_n or BENCHMARK_N})"]

    def scaled(k: int) -> int:
        return max(1, round(k * scale))

    everything = np.arange(n)
    # a split given with the data is the split, except COCO.mat's under the UCCH protocol (its own rows)
    if fixed is not None and (protocol == "djsrh" or dataset == "wiki" or dataset not in UCCH_QUERIES):
        query, database = np.sort(fixed["query"]), np.sort(fixed["database"])
        if "train" in fixed:
            train = np.sort(fixed["train"])
            notes.append("fixed query/database/train from the dataset's files")
        elif dataset == "wiki" or protocol == "ucch":
            train = database
            notes.append("fixed split: query = test rows, database = train = training rows")
        else:
            n_train = DJSRH["coco"]["n_train"] if dataset == "coco" else scaled(5000)
            train = rng.choice(database, size=min(n_train, database.size), replace=False)
            notes.append(f"fixed query/database from the dataset's files; {min(n_train, database.size)} random "
                         "training rows from the database")
    elif protocol == "ucch":
        n_query = scaled(UCCH_QUERIES.get(dataset, 2000))
        query, database = everything[n - n_query:], everything[: n - n_query]
        train = database
        notes.append(f"last {n_query} rows are the queries; train = database")
    else:
        spec = DJSRH.get(dataset, {})
        n_query, n_train = scaled(spec.get("n_query", 2000)), scaled(spec.get("n_train", 5000))
        if labels.shape[1] == 0 or dataset == "coco":
            query = rng.choice(n, size=n_query, replace=False)
            notes.append("random query set")
            rest = np.setdiff1d(everything, query)
            train = rng.choice(rest, size=min(n_train, rest.size), replace=False)
        else:
            query, train = _class_balanced(labels, rng, n_query, n_train,
                                           _quota(spec.get("query_quota"), n_query, labels.shape[1], scale),
                                           _quota(spec.get("train_quota"), n_train, labels.shape[1], scale))
            notes.append("class-balanced query and train sets (DJSRH)")
        database = np.setdiff1d(everything, query)
    n_val = min(query.size, database.size // 4)
    pool = np.setdiff1d(database, train) if train.size < database.size else database
    if pool.size < n_val:
        pool = database
    val = rng.choice(pool, size=n_val, replace=False)
    holdout = holdout_default(protocol, dataset) if val_holdout is None else val_holdout
    if holdout and np.isin(val, train).any():
        train = np.setdiff1d(train, val)
        notes.append(f"validation rows held out of training ({n_val} rows): train = database − val")
    return Split(np.sort(query), np.sort(database), np.sort(train), np.sort(val), protocol, seed, notes,
                 bool(holdout))


def _quota(quota: tuple[int, int] | None, total: int, n_classes: int, scale: float) -> tuple[int, int]:
    """(first label, each other label): the dataset's own quotas, else an even share of ``total``."""
    if quota is not None:
        return max(1, round(quota[0] * scale)), max(1, round(quota[1] * scale))
    each = max(1, total // n_classes)
    return max(each, total - each * (n_classes - 1)), each


def _class_balanced(labels: np.ndarray, rng: np.random.Generator, n_query: int, n_train: int,
                    query_quota: tuple[int, int], train_quota: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """DJSRH's draw: per label in order, take its quota of unused rows for query, then for train."""
    n = labels.shape[0]
    free = np.ones(n, bool)
    query, train, taken_q, taken_t = [], [], 0, 0
    by_label = scipy.sparse.csc_array(labels > 0)  # each label's rows, sorted: one pass over the labels
    for c in range(labels.shape[1]):
        members = by_label.indices[by_label.indptr[c]:by_label.indptr[c + 1]]
        rows = rng.permutation(members[free[members]])
        q_c = query_quota[0] if c == 0 else query_quota[1]
        t_c = train_quota[0] if c == 0 else train_quota[1]
        q_c = max(0, min(q_c, n_query - taken_q))
        t_c = max(0, min(t_c, n_train - taken_t))
        query.append(rows[:q_c])
        train.append(rows[q_c:q_c + t_c])
        taken_q, taken_t = taken_q + len(query[-1]), taken_t + len(train[-1])
        free[rows[:q_c + t_c]] = False
    query, train = np.concatenate(query), np.concatenate(train)
    if query.size < n_query:  # top up at random from what is left, as JDSH/CFRH do
        extra = rng.choice(np.flatnonzero(free), size=n_query - query.size, replace=False)
        free[extra] = False
        query = np.concatenate([query, extra])
    if train.size < n_train:
        extra = rng.choice(np.flatnonzero(free), size=min(n_train - train.size, int(free.sum())), replace=False)
        train = np.concatenate([train, extra])
    return query.astype(np.int64), train.astype(np.int64)
