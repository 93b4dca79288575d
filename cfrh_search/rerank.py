"""Re-ranking: the Hamming top-R, ordered by a finer score.

For an image query, the cosine of CLIP features (query image against each candidate pair's
image); for a text query, the asymmetric inner product of the query's real-valued code with the
candidates' binary codes. ``rerank_evaluation`` measures what it adds to mAP@k on the test
queries and what it costs per query; ``record_rerank`` stores that in the run's result.json,
where ``make table`` shows it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from cfrh_search.index import Hit, Index
from cfrh_search.queries import Queries
from cfrh_train.results import read_result, write_result


class Features:
    """The cached CLIP features of every cache row of an index (float16), read once."""

    def __init__(self, index: Index):
        self.index, self._all = index, None

    def __call__(self) -> np.ndarray:
        if self._all is None:
            self._all = self.index.cache().read(f"image/{self.index.meta['encoder']['tag']}")
        return self._all


def rerank(index: Index, code: np.ndarray, target: str, k: int, candidates: int,
           image_feature: np.ndarray | None = None, features: Features | None = None) -> list[Hit]:
    """Hamming top-``candidates``, then the top k of them by the finer score (see the module doc)."""
    ids, dists = (x[0] for x in index.nearest(code, target, candidates))
    if image_feature is not None:  # the CLIP side: query image against the candidates' images
        feats = (features or Features(index))()[index.rows[ids]].astype(np.float32)
        q = np.ravel(image_feature).astype(np.float32)
        scores = feats @ q / np.maximum(np.linalg.norm(feats, axis=1) * np.linalg.norm(q), 1e-12)
    else:  # asymmetric: the query's real code against the candidates' binary codes
        bits = np.unpackbits(index.codes[target][ids].view(np.uint8), axis=1, bitorder="little")[:, :index.bits]
        scores = (bits.astype(np.float32) * 2 - 1) @ np.ravel(code).astype(np.float32)
    order = np.argsort(-scores, kind="stable")[:k]  # ties keep the Hamming order
    return [Hit(int(index.rows[ids[i]]), int(dists[i]), float(scores[i])) for i in order]


def rerank_evaluation(index: Index, queries: Queries, rows: np.ndarray, candidates: int = 500, k: int = 50) -> dict:
    """mAP@k of the query ``rows`` with Hamming ranking vs re-ranked top-``candidates``, and time per query.

    I→T: the query image's cached CLIP feature against the candidates' image features; T→I:
    the query text's real code against the candidates' binary image codes.
    """
    labels = index.cache().read("labels")
    features = Features(index)
    feats = features()[rows].astype(np.float32)
    qi, qt = queries.hash(image=feats, text=index.rows_of(rows, "text"))
    out = {"candidates": candidates, "k": k}
    for direction, code, target in (("i2t", qi, "text"), ("t2i", qt, "image")):
        t = time.perf_counter()
        plain = index.search(code, target, k)
        plain_s = time.perf_counter() - t
        t = time.perf_counter()
        reranked = [rerank(index, code[i:i + 1], target, k, candidates,
                           image_feature=feats[i] if direction == "i2t" else None, features=features)
                    for i in range(len(rows))]
        rerank_s = time.perf_counter() - t
        ap = lambda lists: float(np.mean([ap_at(labels[q], labels[[h.row for h in hits]]) for q, hits in zip(rows, lists)]))
        out[direction] = {f"map@{k}_hamming": ap(plain), f"map@{k}_reranked": ap(reranked),
                          "ms_per_query_hamming": 1000 * plain_s / len(rows),
                          "ms_per_query_reranked": 1000 * rerank_s / len(rows)}
    return out


def record_rerank(run_folder: str | Path, candidates: int, device: str = "auto") -> dict:
    """``rerank_evaluation`` on a run's test queries, stored in its result.json (``make table`` shows it)."""
    run_folder = Path(run_folder)
    index = Index(run_folder)
    result = read_result(run_folder)
    result["rerank"] = rerank_evaluation(index, Queries(index, device), index.cache().read("split/query"), candidates,
                                         result["config"]["topk"])
    write_result(run_folder, {k: v for k, v in result.items() if k != "schema_version"})
    return result["rerank"]


def ap_at(q_label: np.ndarray, hit_labels: np.ndarray) -> float:
    """calculate_top_map's AP of one ranked list: over its hits, normalised by their number."""
    rel = (hit_labels.astype(np.int64) @ q_label.astype(np.int64)) > 0
    if not rel.any():
        return 0.0
    hits = np.cumsum(rel)
    return float((hits[rel] / (np.flatnonzero(rel) + 1)).mean())
