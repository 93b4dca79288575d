"""NUS-WIDE TC-10 in the DJSRH/DCMH files: 186,577 pairs, 1,000-d tag BoW, 10 labels.

``IAll`` is about 28 GB: it is only ever read in ranges of rows (see ``ArrayImages``).
"""

from pathlib import Path

from cfrh_cache.readers.base import Source, read_mat_trio

N, VOCAB, CLASSES = 186577, 1000, 10


def read(root: Path, image_layout: str | None = None) -> Source:
    return read_mat_trio(root, "nuswide", "nus-wide-tc10", n=N, vocab=VOCAB, classes=CLASSES, reference_n=N,
                         image_layout=image_layout)
