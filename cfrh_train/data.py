"""The cached tensors a method trains on: read once from the Zarr store, kept compact.

Train rows go to the device as float32 in one piece (5,000–10,000 rows); the database stays on
the host in its stored dtypes (float16 features, uint8 BoW) and is hashed in chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse

from cfrh.errors import CacheError
from cfrh_cache.store import Cache


@dataclass
class CachedData:
    dataset: str
    encoder: str
    image: np.ndarray  # (N, D) float16
    text: np.ndarray | scipy.sparse.csr_array  # (N, V)
    labels: np.ndarray  # (N, C) uint8
    split: dict[str, np.ndarray]
    attrs: dict

    def rows(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(image, text) float32 rows."""
        text = self.text[index]
        text = text.toarray() if scipy.sparse.issparse(text) else text
        return self.image[index].astype(np.float32), np.asarray(text, np.float32)


def load_cache(cache_dir: str | Path, dataset: str, encoder: str | None = None) -> CachedData:
    cache = Cache.open(Path(cache_dir) / dataset)
    encoders = cache.encoders()
    if not encoders:
        raise CacheError(f"{cache.path}: no complete image features; run `cfrh-cache features {dataset}` first")
    if encoder is None:
        encoder = encoders[0] if len(encoders) == 1 else None
        if encoder is None:
            raise CacheError(f"{cache.path}: several encoders ({', '.join(encoders)}); choose one with --encoder")
    elif encoder not in encoders:
        raise CacheError(f"{cache.path}: no complete image/{encoder} (has: {', '.join(encoders)})")
    labels = cache.read("labels")
    if labels.shape[1] == 0:
        raise CacheError(f"{cache.path}: the dataset has no labels, so retrieval cannot be evaluated")
    image = cache.read(f"image/{encoder}")
    bad = np.flatnonzero(~np.isfinite(image.astype(np.float32)).all(1))
    if bad.size:
        raise CacheError(f"{cache.path}: image/{encoder} has NaN/Inf in rows {bad[:10].tolist()}")
    return CachedData(dataset, encoder, image, cache.read_bow(), labels, cache.split(), cache.attrs)
