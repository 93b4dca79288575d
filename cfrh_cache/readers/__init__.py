"""Dataset readers, registered by name: each turns an on-disk form into a ``Source``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cfrh.errors import ConfigError
from cfrh_cache.readers import coco, manifest, mirflickr, nuswide, shards, synth, wiki
from cfrh_cache.readers.base import ArrayImages, FeatureRows, FileImages, ImageSource, Source

READERS: dict[str, Callable[[Path, str | None], Source]] = {
    "mirflickr": mirflickr.read,
    "nuswide": nuswide.read,
    "coco": coco.read,
    "wiki": wiki.read,
    "manifest": manifest.read,
    "webdataset": shards.read_webdataset,
    "parquet": shards.read_parquet,
    "synth": synth.read,
}
SHARD_READERS = ("webdataset", "parquet")  # the readers that take --label-field and --on-error


def read_dataset(name: str, root: str | Path, image_layout: str | None = None, label_field: str | None = None,
                 on_error: str = "stop") -> Source:
    """The dataset ``name`` as found under ``root``. ``image_layout``: the axis order of an image
    array (``IAll``) where the reader cannot tell it (see ``ArrayImages``). ``label_field`` and
    ``on_error`` are for shards (``SHARD_READERS``): the JSON field of the labels, and whether a bad
    sample stops the read or is left out."""
    if name not in READERS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(READERS)}")
    if on_error not in shards.ON_ERROR:
        raise ConfigError(f"--on-error {on_error!r}: expected {' or '.join(shards.ON_ERROR)}")
    if name in SHARD_READERS:
        return READERS[name](Path(root), image_layout, label_field, on_error)
    if label_field or on_error != "stop":
        raise ConfigError(f"--label-field and --on-error are for {' and '.join(SHARD_READERS)} shards, not {name}")
    return READERS[name](Path(root), image_layout)


__all__ = ["READERS", "read_dataset", "Source", "ImageSource", "ArrayImages", "FeatureRows", "FileImages"]
