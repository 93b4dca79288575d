"""cfrh: unsupervised cross-modal hashing in two stages (``cfrh_cache`` → ``cfrh_train``).

This package holds what both stages share (errors, devices, the version, atomic file writes,
binary codes, text tokens, image decoding and the image encoder) and the one ``cfrh`` command.
It imports nothing heavy at import time, so ``cfrh --help`` and ``cfrh cache info`` stay light.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cfrh")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
