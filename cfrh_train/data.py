"""The cached tensors a method trains on: read once from the Zarr store, kept compact.

Train rows go to the device as float32 in one piece (5,000–10,000 rows); the database stays on
the host in its stored dtypes (float16 features, uint8 BoW) and is hashed in chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse

from cfrh.errors import CacheError, ConfigError
from cfrh_cache.store import Cache, check_name, dense_rows
from cfrh_train.methods import method_class


@dataclass
class CachedData:
    dataset: str
    encoder: str
    image: np.ndarray  # (N, D) float16
    text: np.ndarray | scipy.sparse.csr_array  # (N, V)
    labels: np.ndarray  # (N, C) uint8
    split: dict[str, np.ndarray]
    attrs: dict
    inputs: dict  # the checksums of every array read: what a run is made from
    text_kind: str = "bow"  # "bow" (BoW input layer, sigmoid decoder) or "dense" (linear layer and decoder)
    text_input: str | None = None  # None: the dataset's own text; else a text encoder's tag

    def rows(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(image, text) float32 rows."""
        return self.image[index].astype(np.float32), dense_rows(self.text, index)


def choose_encoder(cache: Cache, encoder: str | None) -> str:
    """The image array a run uses: the one asked for, or the cache's only one."""
    encoders = cache.encoders()
    if not encoders:
        raise CacheError(f"{cache.path}: no complete image features; run `cfrh-cache features "
                         f"{cache.attrs.get('dataset')}` first")
    if encoder is None:
        if len(encoders) > 1:
            raise CacheError(f"{cache.path}: several encoders ({', '.join(encoders)}); choose one with --encoder")
        return encoders[0]
    if encoder not in encoders:
        raise CacheError(f"{cache.path}: no complete image/{encoder} (has: {', '.join(encoders)})")
    return encoder


def data_inputs(cache: Cache, encoder: str, text: str | None = None) -> dict:
    """What a run reads from the cache, by checksum (from the attributes: no data is read)."""
    name = cache.text_name(text)
    texts = [n for n in Cache.TEXT_ARRAYS if cache.has(n)] if name in Cache.TEXT_ARRAYS else [name]
    read = [f"image/{encoder}", "labels", *(f"split/{k}" for k in ("query", "database", "train", "val")), *texts]
    return {"dataset": cache.attrs.get("dataset"), "arrays": {name: cache.array(name).attrs.get("sha256") for name in read}}


def text_input(cache: Cache, method: str, text: str | None) -> str | None:
    """The text a run reads (the one place this is chosen): ``text`` where named (None: the
    dataset's own); for a method that trains on dense text alone (UCMFH) and no text named, the
    dataset's own text where it is dense, else the cache's first ``text/<tag>``; a cache with
    neither is a ConfigError that says how to make them."""
    if text is not None or not method_class(method).needs_dense_text:
        return text
    if cache.text_kind() == "dense":
        return None
    tags = cache.text_encoders()
    if not tags:
        raise ConfigError(f"{method} needs dense text features (CLIP text embeddings) and {cache.path} has none: "
                          f"build them with `cfrh-cache features {cache.path.name} --text-encoder`, "
                          "or name a text input with `--text TAG`")
    return tags[0]


def load_cache(cache_dir: str | Path, dataset: str, encoder: str | None = None, text: str | None = None,
               method: str | None = None) -> CachedData:
    """The arrays of one run: image features of ``encoder``, the text input ``text`` (None: the
    dataset's own, or for a ``method`` that needs text embeddings, ``text_input``'s), labels and split."""
    cache = Cache.open(Path(cache_dir) / check_name(dataset))
    if method is not None:
        text = text_input(cache, method, text)
    encoder = choose_encoder(cache, encoder)
    labels = cache.read("labels")
    if labels.shape[1] == 0:
        raise CacheError(f"{cache.path}: the dataset has no labels, so retrieval cannot be evaluated")
    image = cache.read(f"image/{encoder}")
    bad = np.flatnonzero(~np.isfinite(image.astype(np.float32)).all(1))
    if bad.size:
        raise CacheError(f"{cache.path}: image/{encoder} has NaN/Inf in rows {bad[:10].tolist()}")
    if image.shape[0] > 1 and not (image != image[:1]).any():
        raise CacheError(f"{cache.path}: image/{encoder} has no variance (every row the same); nothing can be "
                         "learned from it: check the encoder or the imported file")
    words = cache.read_text(text)
    values = words.data if scipy.sparse.issparse(words) else words
    if not np.isfinite(values).all():
        raise CacheError(f"{cache.path}: {cache.text_name(text)} has NaN/Inf values")
    return CachedData(dataset, encoder, image, words, labels, cache.split(), cache.attrs,
                      data_inputs(cache, encoder, text), cache.text_kind(text), text)


def cached_datasets(cache_dir: str | Path) -> list[str]:
    """Datasets under ``cache_dir`` that have complete image features."""
    names = []
    for group in sorted(Path(cache_dir).glob("*/zarr.json")):
        try:
            if Cache.open(group.parent).encoders():
                names.append(group.parent.name)
        except CacheError:
            continue
    return names
