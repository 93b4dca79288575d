"""Dataset readers, registered by name: each turns an on-disk form into a ``Source``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cfrh_cache.readers import coco, manifest, mirflickr, nuswide, synth, wiki
from cfrh_cache.readers.base import ArrayImages, FileImages, ImageSource, Record, Source

READERS: dict[str, Callable[[Path], Source]] = {
    "mirflickr": mirflickr.read,
    "nuswide": nuswide.read,
    "coco": coco.read,
    "wiki": wiki.read,
    "manifest": manifest.read,
    "synth": synth.read,
}


def read_dataset(name: str, root: str | Path) -> Source:
    if name not in READERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(READERS)}")
    return READERS[name](Path(root))


__all__ = ["READERS", "read_dataset", "Source", "Record", "ImageSource", "ArrayImages", "FileImages"]
