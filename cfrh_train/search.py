"""Use the codes: a code index of a cache's database, Hamming top-k search, and re-ranking.

An index folder (``<run>/index/``, written by ``cfrh-train --export``) holds everything a query
needs and nothing training needs:

    index.json      what it indexes: dataset, cache path, rows, bits, method, encoder, vocabulary
    codes.npz       database codes packed in uint64 words (image, text) and their cache rows
    model.pt        the method's hashing side only (encoders, centring; no decoders, graphs, memories)

A text query becomes a BoW through the cache's vocabulary; an image query goes through the same
open_clip encoder and transform as the cache. Search is a Hamming top-k with ties by row
(``hamming_topk``: no sort, one pass over the codes in tiles shared by blocks of queries,
the blocks in parallel).
Re-ranking takes the Hamming top-R and orders it by a finer score: for an image query, the
cosine of CLIP features (query image against each candidate pair's image); for a text query,
the asymmetric inner product of the query's real-valued code with the candidates' binary codes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cfrh.codes import pack_codes
from cfrh.errors import CacheError, ConfigError, DataError
from cfrh.fsio import atomic_write, atomic_write_json, now
from cfrh_train.kernels import query_block, topk_scan

MODEL = "model.safetensors"  # tensors only: loading an index never unpickles anything
MODALITIES = ("image", "text")


def hamming_topk(q_words: np.ndarray, db_words: np.ndarray, n_bits: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest database codes of each query, ties by database position: (ids, distances)."""
    q_words, db_words = np.atleast_2d(q_words), np.atleast_2d(db_words)
    if q_words.shape[1] != db_words.shape[1]:
        raise ValueError(f"query codes have {q_words.shape[1]} words, database codes {db_words.shape[1]}")
    if n_bits > 65535:  # the kernel keeps distances in 16 bits
        raise ValueError(f"codes of {n_bits} bits: the top-k kernel takes up to 65,535")
    k = min(k, db_words.shape[0])
    return topk_scan(np.ascontiguousarray(q_words), np.ascontiguousarray(db_words), n_bits, k,
                     query_block(q_words.shape[0]))


@dataclass(frozen=True)
class IndexSpec:
    """How the database codes are searched: ``kind`` (see ``cfrh_train.ann``), its parameters
    (over the kind's defaults) and the number of shards."""

    kind: str = "exact"
    params: dict | None = None
    shards: int = 1


def export_index(out: dict, cache_dir: str | Path, dataset: str, folder: str | Path,
                 spec: IndexSpec = IndexSpec()) -> Path:
    """Write the index folder of a finished training (``train(...)``'s output)."""
    from safetensors.torch import save_file

    from cfrh import __version__
    from cfrh_cache.store import Cache
    from cfrh_train import ann
    folder = Path(folder)
    result, codes, method = out["result"], out["codes"], out["model"]
    cache = Cache.open(Path(cache_dir) / dataset)
    attrs = cache.attrs
    state = {k: v.contiguous() for k, v in method.index_state().items()}
    atomic_write(folder / MODEL, lambda tmp: save_file(state, str(tmp)))
    packed = {m: pack_codes(codes[f"database_{m}"]) for m in MODALITIES}
    atomic_write(folder / "codes.npz", lambda tmp: np.savez(open(tmp, "wb"), **packed,
                                                            rows=np.asarray(codes["database_index"], np.int64)))
    n, bits = len(codes["database_index"]), int(result["bits"])
    ann.check_params(spec.kind, spec.params or {})
    if not 1 <= spec.shards <= n:
        raise ConfigError(f"--shards {spec.shards}: expected 1..{n} (one shard per database row at most)")
    bounds = ann.shard_bounds(n, spec.shards)
    params = {**ann.defaults(spec.kind, max(1, n // spec.shards), bits), **(spec.params or {})}
    if spec.kind != "exact":
        for m in MODALITIES:
            for i, (a, b) in enumerate(bounds):
                ann.save(ann.build(packed[m][a:b], spec.kind, params, seed=int(result["seed"])),
                         folder / f"{m}.shard{i}.faiss")
    meta = {"dataset": dataset, "model": {"method": result["method"], "config": result["config"],
                                          "dims": list(out["dims"]), "text_kind": out.get("text_kind", "bow")},
            "text": result["config"].get("text"),
            "text_encoder": attrs.get("text_encoders", {}).get(result["config"].get("text") or "", None),
            "cache": str(cache.path.resolve()), "cache_created": attrs.get("created"),
            "method": result["method"], "bits": result["bits"], "seed": result["seed"], "n": int(len(codes["database_index"])),
            "encoder": {**attrs.get("encoders", {}).get(result["encoder"]["tag"], {}), "tag": result["encoder"]["tag"]},
            "vocabulary": attrs.get("vocabulary", {}).get("words") or None,
            "tokenizer": attrs.get("vocabulary", {}).get("tokenizer"), "cfrh_version": __version__,
            "created": now(), "ann": {"kind": spec.kind, "params": params, "shards": bounds}}
    meta["encoder"].pop("encode_stats", None)
    atomic_write_json(folder / "index.json", meta)  # last: an index without it is not finished
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
            raise CacheError(f"{self.folder}: no index.json; write an index with `cfrh-train ... --export`")
        self.meta = json.loads((self.folder / "index.json").read_text())
        redo = (f"the index was written by cfrh {self.meta.get('cfrh_version', '?')}; this is cfrh {__version__}: "
                "write it again with `cfrh-train ... --export`")
        if "model" not in self.meta or not (self.folder / MODEL).is_file():
            raise CacheError(f"{self.folder}: no {MODEL} (an index of an older layout); {redo}")
        from safetensors.torch import load_file
        saved = self.meta["model"]
        self.device = torch.device(device)
        self.method = build(saved["method"], saved["config"], *saved["dims"], saved.get("text_kind", "bow"))
        try:
            self.method.load_index_state(load_file(self.folder / MODEL))
        except RuntimeError as err:  # shapes or names changed, e.g. 0.2's BoW layers store their weight transposed
            detail = " ".join(str(err).split())
            raise CacheError(f"{self.folder}/{MODEL} does not fit method {saved['method']!r}: {detail} {redo}") from None
        self.method.to(self.device).eval()
        codes = np.load(self.folder / "codes.npz")
        self.codes = {m: codes[m] for m in MODALITIES}
        self.rows = codes["rows"]
        self.bits = int(self.meta["bits"])
        self._encoder = self._text_encoder = self._cache = self._features = None
        self._shards: dict[str, list] = {}

    # -- hashing new queries -------------------------------------------------------------
    def text_vectors(self, texts: list[str]) -> np.ndarray:
        """BoW rows of free texts through the cache's vocabulary; a text none of whose words is in
        it would hash like every other such text, so it is refused."""
        from cfrh.text import TOKENIZER, bag_of_words
        if self.meta.get("text_encoder"):  # the run hashes CLIP text embeddings: encode the query the same way
            if not all(t.strip() for t in texts):
                raise ConfigError("--text: an empty query; give some words")
            enc = self.meta["text_encoder"]
            if enc.get("pretrained") == "file":
                raise ConfigError(f"the text encoder {self.meta['text']} was loaded from a file; text queries need it "
                                  "(not supported here yet): use --row or --image")
            if self._text_encoder is None:  # loaded once: a served index answers many queries
                from cfrh.encoders import load_encoder
                self._text_encoder = load_encoder(enc["model"], enc.get("pretrained", "none"), str(self.device),
                                                  enc.get("random_init_seed", 0))
            return self._text_encoder.encode_texts(texts).astype(np.float32)
        if self.meta["model"].get("text_kind") == "dense":
            text = self.meta.get("text") or "the dataset's own"
            raise ConfigError(f"{self.folder}: the model hashes dense text features ({text}), which free text cannot "
                              "be turned into here; use --row or --image")
        words = self.meta.get("vocabulary")
        if not words:
            raise ConfigError(f"{self.meta['dataset']}: its BoW vocabulary is not known (the dataset shipped BoW "
                              "vectors without the words), so free text cannot be hashed; use --row or --image")
        tokenizer = self.meta.get("tokenizer")
        if tokenizer and tokenizer != TOKENIZER:
            raise CacheError(f"{self.folder}: its vocabulary was built with tokenizer {tokenizer}, this cfrh has "
                             f"{TOKENIZER}; rebuild the cache (cfrh-cache features … --rebuild) and export again")
        bow = bag_of_words(texts, words).toarray().astype(np.float32)
        for text, row in zip(texts, bow):
            if not row.any():
                raise ConfigError(f"--text {text!r}: none of its words is in the cache's vocabulary of {len(words)} "
                                  f"words (e.g. {', '.join(words[:8])}); every such query would return the same hits")
        return bow

    def image_features(self, paths: list[str | Path]) -> np.ndarray:
        """CLIP features of image files, exactly as stage 1 computed the cache's (same model and transform)."""
        from cfrh.encoders import load_encoder, pil_geometric
        from cfrh.images import open_rgb
        if self._encoder is None:
            enc = self.meta["encoder"]
            pretrained = enc.get("pretrained", "none")
            if pretrained == "file":
                raise ConfigError(f"the cache's encoder {enc['tag']} was loaded from the file {enc.get('weights_file')}; "
                                 "pass it with --weights PATH")
            self._encoder = load_encoder(enc["model"], pretrained, str(self.device), enc.get("random_init_seed", 0))
        e = self._encoder
        pixels = []
        for p in paths:
            if not Path(p).is_file():
                raise DataError(f"--image {p}: not a readable file")
            pixels.append(pil_geometric(open_rgb(p), e.size, e.interpolation, e.resize_mode, e.resize_to))
        return e(torch.stack(pixels)).astype(np.float32)

    def use_weights(self, path: str | Path) -> None:
        """The local weights file the cache was built with (checked by sha256)."""
        from cfrh.encoders import load_encoder
        from cfrh.fsio import sha256_file
        enc = self.meta["encoder"]
        if sha256_file(Path(path)) != enc.get("weights_sha256"):
            raise ConfigError(f"--weights {path}: sha256 differs from the weights the cache was built with "
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
        """Positions in the index and distances of the k nearest ``target`` codes of each query,
        shard by shard and merged (ties by position), by the index's kind."""
        from cfrh_train import ann
        q = pack_codes(np.atleast_2d(code))
        spec = self.meta["ann"]  # every index of this layout records it (older ones are refused on load)
        k = min(k, len(self.rows))
        if spec["kind"] == "exact":
            found = [hamming_topk(q, self.codes[target][a:b], self.bits, k) for a, b in spec["shards"]]
            return ann.merge(np.concatenate([i + a for (a, _), (i, _) in zip(spec["shards"], found)], 1),
                             np.concatenate([d for _, d in found], 1), k)
        return ann.search(self.shards(target), q, k)

    def shards(self, target: str) -> list[tuple[int, object]]:
        """(first position, faiss index) of each shard of ``target`` codes, loaded once."""
        from cfrh_train import ann
        if target not in self._shards:
            spec = self.meta["ann"]
            self._shards[target] = [(a, ann.load(self.folder / f"{target}.shard{i}.faiss", spec["kind"], spec["params"]))
                                    for i, (a, _) in enumerate(spec["shards"])]
        return self._shards[target]

    def search(self, code: np.ndarray, target: str, k: int = 10) -> list[list[Hit]]:
        """Hamming top-k of real or ±1 query codes (n, K) among the database's ``target`` codes."""
        ids, dists = self._nearest(code, target, k)
        return [[Hit(int(self.rows[i]), int(d)) for i, d in zip(row_i, row_d)] for row_i, row_d in zip(ids, dists)]

    def cache(self):
        """The cache the index was built from; refused if it has been rebuilt since (rows may differ)."""
        if self._cache is None:
            from cfrh_cache.store import Cache
            cache = Cache.open(self.meta["cache"])
            if cache.attrs.get("created") != self.meta["cache_created"]:
                raise CacheError(f"{cache.path}: rebuilt ({cache.attrs.get('created')}) after this index was written "
                                 f"({self.meta['cache_created']}); retrain with --export")
            self._cache = cache
        return self._cache

    def check_rows(self, rows) -> np.ndarray:
        """Cache rows as given (``--row``): each in 0..n-1 (no negative counting from the end)."""
        rows = np.asarray(rows, np.int64)
        n = int(self.cache().attrs["n"])
        bad = rows[(rows < 0) | (rows >= n)]
        if bad.size:
            raise ConfigError(f"--row {int(bad[0])}: out of range; the cache has rows 0..{n - 1}")
        return rows

    def rows_of(self, rows, modality: str) -> np.ndarray:
        """float32 image features or BoW vectors of some cache rows, reading only those rows."""
        cache = self.cache()
        rows = self.check_rows(rows)
        if modality == "text":
            return cache.text_rows(rows, self.meta.get("text"))
        return np.asarray(cache.array(f"image/{self.meta['encoder']['tag']}").get_orthogonal_selection((rows,)),
                          np.float32)

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

    def thumbnail(self, row: int | None = None, file: str | Path | None = None) -> str:
        """A cache row's image (or an image file) as an embedded JPEG thumbnail (``data:`` URI)."""
        from cfrh.images import open_rgb
        from cfrh.thumbnails import data_uri, thumbnail
        return data_uri(thumbnail(open_rgb(file) if file is not None else self.cache().row_image(row)))

    def describe(self, rows: list[int]) -> list[dict]:
        """What a person wants to see of each hit: labels, the text's words, the image's path or place."""
        cache = self.cache()
        names = cache.array("labels").attrs.get("label_names") or []
        labels = cache.array("labels").get_orthogonal_selection((np.asarray(rows),))
        bow = self.rows_of(rows, "text")
        words = self.meta.get("vocabulary") or []
        texts = cache.read_strings("text/raw", rows) if cache.has("text/raw/offsets") else None
        paths = cache.read_strings("meta/image_path", rows) if cache.has("meta/image_path/offsets") else None
        place = cache.attrs.get("images", {})
        out = []
        for i, (row, lab, vec) in enumerate(zip(rows, labels, bow)):
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
    from cfrh_train.results import read_result, write_result
    run_folder = Path(run_folder)
    index = Index(run_folder / "index", device)
    result = read_result(run_folder)
    result["rerank"] = rerank_evaluation(index, index.cache().read("split/query"), candidates, result["config"]["topk"])
    write_result(run_folder, {k: v for k, v in result.items() if k != "schema_version"})
    return result["rerank"]


def _ap_at(q_label: np.ndarray, hit_labels: np.ndarray) -> float:
    """calculate_top_map's AP of one ranked list: over its hits, normalised by their number."""
    rel = (hit_labels.astype(np.int64) @ q_label.astype(np.int64)) > 0
    if not rel.any():
        return 0.0
    hits = np.cumsum(rel)
    return float((hits[rel] / (np.flatnonzero(rel) + 1)).mean())
