"""cfrh_cache: stage 1 of cfrh. Read a dataset, encode its images once with open_clip, and write
texts, labels, a seeded protocol split and the features to a chunked Zarr (v3) store."""

__version__ = "0.2.0"
