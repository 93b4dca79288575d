"""Query encoding: a text, an image file or a cache row turned into a query code, with the model
an index was exported from.

A text query becomes a BoW through the cache's vocabulary (or, where the run hashes CLIP text
embeddings, goes through the same text tower); an image query goes through the same open_clip
encoder and transform as the cache. Encoders are loaded once: a served index answers many
queries.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cfrh.devices import resolve_device
from cfrh.encoders import Encoder, load_encoder, pil_geometric
from cfrh.errors import CacheError, ConfigError, DataError
from cfrh.fsio import sha256_file
from cfrh.images import open_rgb
from cfrh.text import TOKENIZER, bag_of_words
from cfrh_search.index import Index
from cfrh_search.model import load_model


class Queries:
    """The query side of an index: the stored model, and the encoders a new query goes through."""

    def __init__(self, index: Index, device: str = "auto"):
        self.index, self.meta = index, index.meta
        self.device = resolve_device(device)
        self.method = load_model(index.folder, self.meta["model"], index.redo).to(self.device)
        self._image_encoder: Encoder | None = None
        self._text_encoder: Encoder | None = None

    @torch.no_grad()
    def hash(self, image: np.ndarray | None = None, text: np.ndarray | None = None) -> tuple:
        """Real-valued codes of feature rows (image) or text rows, as the model gives them."""
        t = lambda x: None if x is None else torch.from_numpy(np.asarray(x, np.float32)).to(self.device)
        ci, ct = self.method.encode(t(image), t(text))
        return (None if ci is None else ci.cpu().numpy(), None if ct is None else ct.cpu().numpy())

    def text_code(self, text: str) -> np.ndarray:
        """The real-valued code (1, K) of a free text."""
        return self.hash(text=self.text_vectors([text]))[1]

    def image_code(self, path: str | Path, name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The real-valued code (1, K) of an image file, and its CLIP feature (re-ranking uses it)."""
        feature = self.image_features([path], names=[name] if name else None)
        return self.hash(image=feature)[0], feature

    def row_code(self, row: int, modality: str = "image") -> tuple[np.ndarray, np.ndarray]:
        """The real-valued code (1, K) of a cache row's image (or text), and its feature vector."""
        vectors = self.index.rows_of([row], modality)
        return self.hash(**{modality: vectors})[0 if modality == "image" else 1], vectors

    def text_vectors(self, texts: list[str]) -> np.ndarray:
        """Text rows of free texts, as the run's text input has them: CLIP text embeddings, or a
        BoW through the cache's vocabulary; a text none of whose words is in it would hash like
        every other such text, so it is refused."""
        if self.meta.get("text_encoder"):
            return self._embedded(texts)
        if self.meta["model"].get("text_kind") == "dense":
            text = self.meta.get("text") or "the dataset's own"
            raise ConfigError(f"{self.index.folder}: the model hashes dense text features ({text}), which free text "
                              "cannot be turned into here; use --row or --image")
        words = self.meta.get("vocabulary")
        if not words:
            raise ConfigError(f"{self.meta['dataset']}: its BoW vocabulary is not known (the dataset shipped BoW "
                              "vectors without the words), so free text cannot be hashed; use --row or --image")
        tokenizer = self.meta.get("tokenizer")
        if tokenizer and tokenizer != TOKENIZER:
            raise CacheError(f"{self.index.folder}: its vocabulary was built with tokenizer {tokenizer}, this cfrh "
                             f"has {TOKENIZER}; rebuild the cache (cfrh-cache features … --rebuild) and export again")
        bow = bag_of_words(texts, words).toarray().astype(np.float32)
        for text, row in zip(texts, bow):
            if not row.any():
                raise ConfigError(f"--text {text!r}: none of its words is in the cache's vocabulary of {len(words)} "
                                  f"words (e.g. {', '.join(words[:8])}); every such query would return the same hits")
        return bow

    def _embedded(self, texts: list[str]) -> np.ndarray:
        """CLIP text embeddings of free texts, with the text tower the cache's were made with."""
        if not all(t.strip() for t in texts):
            raise ConfigError("--text: an empty query; give some words")
        enc = self.meta["text_encoder"]
        if enc.get("pretrained") == "file":
            raise ConfigError(f"the text encoder {self.meta['text']} was loaded from a file; text queries need it "
                              "(not supported here yet): use --row or --image")
        if self._text_encoder is None:
            self._text_encoder = load_encoder(enc["model"], enc.get("pretrained", "none"), str(self.device),
                                              enc.get("random_init_seed", 0))
        return self._text_encoder.encode_texts(texts).astype(np.float32)

    def image_features(self, paths: list[str | Path], names: list[str] | None = None) -> np.ndarray:
        """CLIP features of image files, exactly as stage 1 computed the cache's (same model and
        transform). ``names``: what an error calls each file (an upload's own name)."""
        if self._image_encoder is None:
            enc = self.meta["encoder"]
            pretrained = enc.get("pretrained", "none")
            if pretrained == "file":
                raise ConfigError(f"the cache's encoder {enc['tag']} was loaded from the file "
                                  f"{enc.get('weights_file')}; pass it with --weights PATH")
            self._image_encoder = load_encoder(enc["model"], pretrained, str(self.device),
                                               enc.get("random_init_seed", 0))
        e = self._image_encoder
        pixels = []
        for p, name in zip(paths, names or paths):
            if not Path(p).is_file():
                raise DataError(f"--image {name}: not a readable file")
            pixels.append(pil_geometric(open_rgb(p, name=str(name)), e.size, e.interpolation, e.resize_mode,
                                        e.resize_to))
        return e(torch.stack(pixels)).astype(np.float32)

    def use_weights(self, path: str | Path) -> None:
        """The local weights file the cache was built with (checked by sha256)."""
        enc = self.meta["encoder"]
        if sha256_file(Path(path)) != enc.get("weights_sha256"):
            raise ConfigError(f"--weights {path}: sha256 differs from the weights the cache was built with "
                              f"({enc.get('weights_file')}, {str(enc.get('weights_sha256'))[:12]}…)")
        self._image_encoder = load_encoder(enc["model"], str(path), str(self.device), enc.get("random_init_seed", 0))
