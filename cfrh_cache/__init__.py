"""cfrh_cache: stage 1 of cfrh. Read a dataset, encode its images once with open_clip, and write
texts, labels, a seeded protocol split and the features to a chunked Zarr (v3) store."""

from cfrh import __version__

__all__ = ["__version__"]
