"""Dataset readers, registered by name: each turns an on-disk form into a ``Source``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cfrh.errors import ConfigError
from cfrh_cache.readers import coco, manifest, mirflickr, nuswide, synth, wiki
from cfrh_cache.readers.base import ArrayImages, FeatureRows, FileImages, ImageSource, Source

READERS: dict[str, Callable[[Path, str | None], Source]] = {
    "mirflickr": mirflickr.read,
    "nuswide": nuswide.read,
    "coco": coco.read,
    "wiki": wiki.read,
    "manifest": manifest.read,
    "synth": synth.read,
}


def read_dataset(name: str, root: str | Path, image_layout: str | None = None) -> Source:
    """The dataset ``name`` as found under ``root``. ``image_layout``: the axis order of an image
    array (``IAll``) where the reader cannot tell it (see ``ArrayImages``)."""
    if name not in READERS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(READERS)}")
    return READERS[name](Path(root), image_layout)


__all__ = ["READERS", "read_dataset", "Source", "ImageSource", "ArrayImages", "FeatureRows", "FileImages"]
