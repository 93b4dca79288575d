"""MIRFlickr-25K in the DJSRH/DCMH files: 20,015 cleaned pairs, 1,386-d tag BoW, 24 labels."""

from pathlib import Path

from cfrh_cache.readers.base import Source, read_mat_trio

N, VOCAB, CLASSES = 20015, 1386, 24


def read(root: Path, image_layout: str | None = None) -> Source:
    """``mirflickr25k-iall.mat`` (IAll, v7.3), ``-yall.mat`` (YAll), ``-lall.mat`` (LAll), v5 or v7.3 each."""
    return read_mat_trio(root, "mirflickr", "mirflickr25k", n=N, vocab=VOCAB, classes=CLASSES, reference_n=N,
                         image_layout=image_layout)
