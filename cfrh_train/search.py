"""Use the codes: a code index of a cache's database, Hamming top-k search, and re-ranking.

An index folder (``<run>/index/``, written by ``cfrh-train --export``) holds everything a query
needs and nothing training needs:

    index.json      what it indexes: dataset, cache path, rows, bits, method, encoder, vocabulary
    codes.npz       database codes packed in uint64 words (image, text) and their cache rows
    model.pt        the method's hashing side only (encoders, centring; no decoders, graphs, memories)

A text query becomes a BoW through the cache's vocabulary; an image query goes through the same
open_clip encoder and transform as the cache. Search is a Hamming top-k with ties by row
(``hamming_topk``: no sort, two passes over the codes, the queries in parallel).
Re-ranking takes the Hamming top-R and orders it by a finer score: for an image query, the
cosine of CLIP features (query image against each candidate pair's image); for a text query,
the asymmetric inner product of the query's real-valued code with the candidates' binary codes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numba
import numpy as np
import torch

from cfrh_train.metrics import pack_words, popcount, to_bits

TRAINING_ONLY = ("decoder", "nbr_index", "nbr_weight", "memory")  # state a query never needs
MODALITIES = ("image", "text")


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """±1 (or real, sign(0) = +1) codes (n, K) → uint64 words (n, ceil(K/64))."""
    return pack_words(to_bits(codes))


@numba.njit(parallel=True, cache=True)
def _topk(q_words, db_words, n_bits, k):
    nq, n = q_words.shape[0], db_words.shape[0]
    nb = n_bits + 1
    ids = np.empty((nq, k), np.int64)
    dists = np.empty((nq, k), np.int32)
    for q in numba.prange(nq):
        dist = np.empty(n, np.uint16)
        hist = np.zeros(nb, np.int64)
        for j in range(n):
            d = 0
            for w in range(q_words.shape[1]):
                d += popcount(q_words[q, w] ^ db_words[j, w])
            dist[j] = d
            hist[d] += 1
        pos = np.zeros(nb, np.int64)  # where each distance's items start in the output
        last, take = nb - 1, 0  # the distance where the k-th item lies, and how many of it fit
        total = 0
        for d in range(nb):
            pos[d] = total
            if total + hist[d] >= k:
                last, take = d, k - total
                break
            total += hist[d]
        for j in range(n):  # index order: a stable counting sort of the first k items
            d = dist[j]
            if d < last or (d == last and take > 0):
                if d == last:
                    take -= 1
                ids[q, pos[d]] = j
                dists[q, pos[d]] = d
                pos[d] += 1
    return ids, dists


def hamming_topk(q_words: np.ndarray, db_words: np.ndarray, n_bits: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest database codes of each query, ties by database position: (ids, distances)."""
    q_words, db_words = np.atleast_2d(q_words), np.atleast_2d(db_words)
    if q_words.shape[1] != db_words.shape[1]:
        raise ValueError(f"query codes have {q_words.shape[1]} words, database codes {db_words.shape[1]}")
    k = min(k, db_words.shape[0])
    return _topk(np.ascontiguousarray(q_words), np.ascontiguousarray(db_words), n_bits, k)


def encoder_state(method: torch.nn.Module) -> dict:
    return {k: v.cpu() for k, v in method.state_dict().items() if not any(t in k for t in TRAINING_ONLY)}


def export_index(out: dict, cache_dir: str | Path, dataset: str, folder: str | Path) -> Path:
    """Write the index folder of a finished training (``train(...)``'s output)."""
    from cfrh import __version__
    from cfrh_cache.store import Cache
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    result, codes, method = out["result"], out["codes"], out["model"]
    cache = Cache.open(Path(cache_dir) / dataset)
    attrs = cache.attrs
    torch.save({"method": result["method"], "config": result["config"], "dims": out["dims"],
                "state": encoder_state(method)}, folder / "model.pt")
    np.savez(folder / "codes.npz", image=pack_codes(codes["database_image"]), text=pack_codes(codes["database_text"]),
             rows=np.asarray(codes["database_index"], np.int64))
    meta = {"dataset": dataset, "cache": str(cache.path.resolve()), "cache_created": attrs.get("created"),
            "method": result["method"], "bits": result["bits"], "seed": result["seed"], "n": int(len(codes["database_index"])),
            "encoder": {**attrs.get("encoders", {}).get(result["encoder"]["tag"], {}), "tag": result["encoder"]["tag"]},
            "vocabulary": attrs.get("vocabulary", {}).get("words") or None, "cfrh_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    meta["encoder"].pop("encode_stats", None)
    (folder / "index.json").write_text(json.dumps(meta, indent=1))
    return folder


@dataclass
class Hit:
    row: int  # the cache row
    distance: int
    score: float | None = None  # the re-ranking score, where re-ranked


class Index:
    """A loaded index folder: hash new queries with the stored model and search the codes."""

    def __init__(self, folder: str | Path, device: str = "cpu"):
        from cfrh import __version__
        from cfrh_train.methods import build
        self.folder = Path(folder)
        if not (self.folder / "index.json").is_file():
            raise FileNotFoundError(f"{self.folder}: no index.json; write an index with `cfrh-train ... --export`")
        self.meta = json.loads((self.folder / "index.json").read_text())
        saved = torch.load(self.folder / "model.pt", map_location="cpu", weights_only=False)
        self.device = torch.device(device)
        self.method = build(saved["method"], saved["config"], *saved["dims"])
        redo = (f"the index was written by cfrh {self.meta.get('cfrh_version', '?')}; this is cfrh {__version__}: "
                "write it again with `cfrh-train ... --export`")
        try:
            missing, unexpected = self.method.load_state_dict(saved["state"], strict=False)
        except RuntimeError as err:  # shapes changed, e.g. 0.2's BoW layers store their weight transposed
            detail = " ".join(str(err).split())
            raise ValueError(f"{self.folder}/model.pt does not fit method {saved['method']!r}: {detail} {redo}") from None
        left = [k for k in missing if not any(t in k for t in TRAINING_ONLY)]
        if left or unexpected:
            raise ValueError(f"{self.folder}/model.pt does not fit method {saved['method']!r}: "
                             f"missing {left}, unexpected {unexpected}; {redo}")
        self.method.to(self.device).eval()
        codes = np.load(self.folder / "codes.npz")
        self.codes = {m: codes[m] for m in MODALITIES}
        self.rows = codes["rows"]
        self.bits = int(self.meta["bits"])
        self._encoder = self._cache = self._features = None

    # -- hashing new queries -------------------------------------------------------------
    def text_vectors(self, texts: list[str]) -> np.ndarray:
        from cfrh.text import bag_of_words
        words = self.meta.get("vocabulary")
        if not words:
            raise ValueError(f"{self.meta['dataset']}: its BoW vocabulary is not known (the dataset shipped BoW "
                             "vectors without the words), so free text cannot be hashed; use --row or --image")
        return bag_of_words(texts, words).toarray().astype(np.float32)

    def image_features(self, paths: list[str | Path]) -> np.ndarray:
        """CLIP features of image files, exactly as stage 1 computed the cache's (same model and transform)."""
        from PIL import Image

        from cfrh.encoders import load_encoder, pil_geometric
        if self._encoder is None:
            enc = self.meta["encoder"]
            pretrained = enc.get("pretrained", "none")
            if pretrained == "file":
                raise ValueError(f"the cache's encoder {enc['tag']} was loaded from the file {enc.get('weights_file')}; "
                                 "pass it with --weights PATH")
            self._encoder = load_encoder(enc["model"], pretrained, str(self.device), enc.get("random_init_seed", 0))
        e = self._encoder
        pixels = []
        for p in paths:
            with Image.open(p) as im:
                pixels.append(pil_geometric(im.convert("RGB"), e.size, e.interpolation, e.resize_mode))
        return e(torch.stack(pixels)).astype(np.float32)

    def use_weights(self, path: str | Path) -> None:
        """The local weights file the cache was built with (checked by sha256)."""
        from cfrh.encoders import load_encoder
        from cfrh.fsio import sha256_file
        enc = self.meta["encoder"]
        if sha256_file(Path(path)) != enc.get("weights_sha256"):
            raise ValueError(f"{path}: sha256 differs from the weights the cache was built with "
                             f"({enc.get('weights_file')}, {str(enc.get('weights_sha256'))[:12]}…)")
        self._encoder = load_encoder(enc["model"], str(path), str(self.device), enc.get("random_init_seed", 0))

    @torch.no_grad()
    def hash(self, image: np.ndarray | None = None, text: np.ndarray | None = None) -> tuple:
        """Real-valued codes of feature rows (image) or BoW rows (text), as the model gives them."""
        t = lambda x: None if x is None else torch.from_numpy(np.asarray(x, np.float32)).to(self.device)
        ci, ct = self.method.encode(t(image), t(text))
        return (None if ci is None else ci.cpu().numpy(), None if ct is None else ct.cpu().numpy())

    # -- searching -----------------------------------------------------------------------
    def _nearest(self, code: np.ndarray, target: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions in the index and distances of the k nearest ``target`` codes of each query."""
        return hamming_topk(pack_codes(np.atleast_2d(code)), self.codes[target], self.bits, k)

    def search(self, code: np.ndarray, target: str, k: int = 10) -> list[list[Hit]]:
        """Hamming top-k of real or ±1 query codes (n, K) among the database's ``target`` codes."""
        ids, dists = self._nearest(code, target, k)
        return [[Hit(int(self.rows[i]), int(d)) for i, d in zip(row_i, row_d)] for row_i, row_d in zip(ids, dists)]

    def cache(self):
        """The cache the index was built from; refused if it has been rebuilt since (rows may differ)."""
        if self._cache is None:
            from cfrh.errors import CacheError
            from cfrh_cache.store import Cache
            cache = Cache.open(self.meta["cache"])
            if cache.attrs.get("created") != self.meta["cache_created"]:
                raise CacheError(f"{cache.path}: rebuilt ({cache.attrs.get('created')}) after this index was written "
                                 f"({self.meta['cache_created']}); retrain with --export")
            self._cache = cache
        return self._cache

    def rows_of(self, rows, modality: str) -> np.ndarray:
        """float32 image features or BoW vectors of some cache rows, reading only those rows."""
        cache = self.cache()
        name = f"image/{self.meta['encoder']['tag']}" if modality == "image" else "text/bow"
        if modality == "text" and not cache.has(name):  # CSR-stored BoW: rows of the sparse matrix
            x = cache.read_bow()[np.asarray(rows)]
            return np.asarray(x.toarray(), np.float32)
        return np.asarray(cache.array(name).get_orthogonal_selection((np.asarray(rows),)), np.float32)

    def features(self) -> np.ndarray:
        """The cached CLIP features of every cache row (float16), read once for re-ranking."""
        if self._features is None:
            self._features = self.cache().read(f"image/{self.meta['encoder']['tag']}")
        return self._features

    def rerank(self, code: np.ndarray, target: str, k: int, candidates: int,
               image_feature: np.ndarray | None = None) -> list[Hit]:
        """Hamming top-``candidates``, then the top k of them by the finer score (see the module doc)."""
        ids, dists = (x[0] for x in self._nearest(code, target, candidates))
        if image_feature is not None:  # the CLIP side: query image against the candidates' images
            feats = self.features()[self.rows[ids]].astype(np.float32)
            q = np.ravel(image_feature).astype(np.float32)
            scores = feats @ q / np.maximum(np.linalg.norm(feats, axis=1) * np.linalg.norm(q), 1e-12)
        else:  # asymmetric: the query's real code against the candidates' binary codes
            bits = np.unpackbits(self.codes[target][ids].view(np.uint8), axis=1, bitorder="little")[:, :self.bits]
            scores = (bits.astype(np.float32) * 2 - 1) @ np.ravel(code).astype(np.float32)
        order = np.argsort(-scores, kind="stable")[:k]  # ties keep the Hamming order
        return [Hit(int(self.rows[ids[i]]), int(dists[i]), float(scores[i])) for i in order]

    def describe(self, rows: list[int]) -> list[dict]:
        """What a person wants to see of each hit: labels, the text's words, the image's path or place."""
        cache = self.cache()
        names = cache.array("labels").attrs.get("label_names") or []
        labels = cache.array("labels").get_orthogonal_selection((np.asarray(rows),))
        bow = self.rows_of(rows, "text")
        words = self.meta.get("vocabulary") or []
        source = _source(cache.attrs)
        out = []
        for row, lab, vec in zip(rows, labels, bow):
            item = {"row": int(row), "labels": [names[c] if c < len(names) else str(c) for c in np.flatnonzero(lab)]}
            if words:
                item["text_words"] = [words[c] for c in np.flatnonzero(vec)]
            if source is not None:
                if source.texts is not None:
                    item["text"] = source.texts[row]
                images = source.images  # a file per image, or one array (IAll) of them all
                item["image"] = str(images.paths[row]) if hasattr(images, "paths") else \
                    f"{Path(images.path).name}:{images.key}[{row}]"
            out.append(item)
        return out


def _source(attrs: dict):
    """The dataset as stage 1 read it (for image paths and raw texts), or None where it is gone."""
    from cfrh_cache.readers import read_dataset
    root = attrs.get("root")
    if not root or not Path(root).exists():
        return None
    try:
        return read_dataset(attrs["dataset"], root)
    except Exception:  # a moved or changed dataset: the hits are still shown by row and labels
        return None


def rerank_evaluation(index: Index, queries: np.ndarray, candidates: int = 500, k: int = 50) -> dict:
    """mAP@k of the test queries with Hamming ranking vs re-ranked top-``candidates``, and time per query.

    I→T: the query image's cached CLIP feature against the candidates' image features; T→I:
    the query text's real code against the candidates' binary image codes.
    """
    cache = index.cache()
    labels = cache.read("labels")
    feats = index.features()[queries].astype(np.float32)
    qi, qt = index.hash(image=feats, text=index.rows_of(queries, "text"))
    out = {"candidates": candidates, "k": k}
    for direction, code, target in (("i2t", qi, "text"), ("t2i", qt, "image")):
        t = time.perf_counter()
        plain = index.search(code, target, k)
        plain_s = time.perf_counter() - t
        t = time.perf_counter()
        reranked = [index.rerank(code[i:i + 1], target, k, candidates,
                                 image_feature=feats[i] if direction == "i2t" else None) for i in range(len(queries))]
        rerank_s = time.perf_counter() - t
        ap = lambda lists: float(np.mean([_ap_at(labels[q], labels[[h.row for h in hits]]) for q, hits in zip(queries, lists)]))
        out[direction] = {f"map@{k}_hamming": ap(plain), f"map@{k}_reranked": ap(reranked),
                          "ms_per_query_hamming": 1000 * plain_s / len(queries),
                          "ms_per_query_reranked": 1000 * rerank_s / len(queries)}
    return out


def record_rerank(run_folder: str | Path, candidates: int, device: str = "cpu") -> dict:
    """``rerank_evaluation`` on a run's test queries, stored in its result.json (``make table`` shows it)."""
    run_folder = Path(run_folder)
    index = Index(run_folder / "index", device)
    result = json.loads((run_folder / "result.json").read_text())
    result["rerank"] = rerank_evaluation(index, index.cache().read("split/query"), candidates, result["config"]["topk"])
    tmp = run_folder / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(run_folder / "result.json")
    return result["rerank"]


def _ap_at(q_label: np.ndarray, hit_labels: np.ndarray) -> float:
    """calculate_top_map's AP of one ranked list: over its hits, normalised by their number."""
    rel = (hit_labels.astype(np.int64) @ q_label.astype(np.int64)) > 0
    if not rel.any():
        return 0.0
    hits = np.cumsum(rel)
    return float((hits[rel] / (np.flatnonzero(rel) + 1)).mean())
