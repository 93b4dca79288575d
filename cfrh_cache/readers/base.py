"""What every reader returns: a ``Source`` with the same fields, whatever the on-disk form.

Images stay lazy (a source of rows read by range, from HDF5 arrays or image files) so the
encoder's DataLoader workers can read and decode them; texts, labels and fixed splits are small
enough to hold in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse
from PIL import Image

from cfrh_cache.matfile import DataError, MatFile


class ImageSource:
    """Rows of images, read by range. Subclasses must be picklable (DataLoader workers)."""

    kind: str  # "array" (decoded pixels) or "file" (encoded images)

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, start: int, stop: int):
        """Array sources: uint8 (n, 3, H, W). File sources: list of RGB PIL images."""
        raise NotImplementedError


class ArrayImages(ImageSource):
    """Decoded images stored in a .mat variable (``IAll``), any axis order MATLAB users save.

    The sample axis is the one of length ``n``, the colour axis the one of length 3, and of the
    two spatial axes the first in MATLAB order is the height (DJSRH's ``transpose(2,1,0)``).
    """

    kind = "array"

    def __init__(self, path: Path, key: str, n: int):
        self.path, self.key, self.n = Path(path), key, n
        with MatFile(self.path) as mat:
            var = mat.var(key, expect="the images, H×W×3×N uint8")
            self.shape, self.format, dtype = var.shape, var.format, var.dtype
        if len(self.shape) != 4:
            raise DataError(f"{self.path}: variable '{key}' has shape {self.shape}, expected 4 axes (H×W×3×N)")
        candidates = [a for a in (3, 0, 1, 2) if self.shape[a] == n]
        if not candidates:
            raise DataError(f"{self.path}: variable '{key}' has shape {self.shape}; no axis of length {n} "
                            "(the number of samples in the other files)")
        self.sample_axis = candidates[0]
        rest = [a for a in range(4) if a != self.sample_axis]
        colour = [a for a in rest if self.shape[a] == 3]
        if not colour:
            raise DataError(f"{self.path}: variable '{key}' has shape {self.shape}, expected a colour axis of length 3")
        self.colour_axis = colour[0]
        self.height_axis, self.width_axis = [a for a in rest if a != self.colour_axis]
        if dtype != np.uint8:
            raise DataError(f"{self.path}: variable '{key}' has dtype {dtype}, expected uint8 pixels")
        self._mat: MatFile | None = None

    def __len__(self) -> int:
        return self.n

    def __getstate__(self):
        return {**self.__dict__, "_mat": None}  # HDF5 handles don't cross processes; reopen lazily

    def read(self, start: int, stop: int) -> np.ndarray:
        if self._mat is None:
            self._mat = MatFile(self.path)
        block = self._mat.var(self.key).take(self.sample_axis, start, stop)
        return np.ascontiguousarray(
            block.transpose(self.sample_axis, self.colour_axis, self.height_axis, self.width_axis))

    def describe(self) -> str:
        return f"{self.path.name}:{self.key} ({self.format}, MATLAB shape {'×'.join(map(str, self.shape))})"


class FileImages(ImageSource):
    """Encoded image files (JPEG, PNG, ...) decoded with Pillow."""

    kind = "file"

    def __init__(self, paths: list[Path]):
        self.paths = [Path(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, start: int, stop: int) -> list[Image.Image]:
        out = []
        for i in range(start, stop):
            try:
                with Image.open(self.paths[i]) as im:
                    out.append(im.convert("RGB"))
            except (OSError, SyntaxError) as exc:
                raise DataError(f"{self.paths[i]}: cannot decode image of row {i} ({exc})") from exc
        return out

    def describe(self) -> str:
        return f"{len(self.paths)} image files"


@dataclass
class Record:
    """One image–text pair as a stream item (for users who iterate a dataset)."""

    index: int
    image: object
    text: str | np.ndarray
    labels: np.ndarray


@dataclass
class Source:
    """A dataset as read from disk, before encoding.

    Exactly one of ``bow`` (shipped text vectors, kept as they are) and ``texts`` (raw strings,
    a vocabulary is built here) is set.
    """

    dataset: str
    images: ImageSource
    labels: np.ndarray  # uint8 (N, C); C = 0 when the dataset has no labels
    files: list[Path]
    bow: np.ndarray | scipy.sparse.csr_array | None = None
    texts: list[str] | None = None
    label_names: list[str] | None = None
    vocabulary: list[str] | None = None  # words of the shipped BoW columns, where known
    fixed_split: dict[str, np.ndarray] | None = None  # e.g. COCO's query/database rows, 0-based
    reference_n: int | None = None  # size of the full benchmark, to scale protocol sizes down
    image_paths: list[str] | None = None  # shown by search tools; relative to the dataset root
    notes: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.images)

    def records(self, start: int = 0, stop: int | None = None) -> Iterator[Record]:
        stop = self.n if stop is None else stop
        for block in range(start, stop, 256):  # images are read a block at a time, never all at once
            end = min(block + 256, stop)
            for i, image in zip(range(block, end), self.images.read(block, end)):
                text = self.texts[i] if self.texts is not None else _row(self.bow, i)
                yield Record(i, image, text, self.labels[i])

    def check(self) -> None:
        """Consistency across files: one row per sample everywhere, labels present where expected."""
        n = self.n
        text_n = len(self.texts) if self.texts is not None else self.bow.shape[0]
        if text_n != n or self.labels.shape[0] != n:
            raise DataError(
                f"{self.dataset}: row counts disagree: {n} images, {text_n} texts, {self.labels.shape[0]} label rows "
                f"(files: {', '.join(p.name for p in self.files)})")
        if self.labels.shape[1] > 0:
            empty = np.flatnonzero(self.labels.sum(axis=1) == 0)
            if empty.size:
                raise DataError(
                    f"{self.dataset}: {empty.size} rows have no label (rows {_preview(empty)}); every row needs "
                    "at least one label for evaluation; drop them first (the benchmarks' cleaned files have none)")


def _row(matrix, i: int) -> np.ndarray:
    row = matrix[[i]] if scipy.sparse.issparse(matrix) else matrix[i]
    return row.toarray().ravel() if scipy.sparse.issparse(row) else np.asarray(row)


def _preview(rows: np.ndarray, k: int = 5) -> str:
    shown = ", ".join(map(str, rows[:k].tolist()))
    return shown + (", …" if rows.size > k else "")


def as_labels(array: np.ndarray, path: Path, key: str) -> np.ndarray:
    """0/1 label matrix as uint8, refusing anything that is not multi-hot."""
    array = np.asarray(array)
    if not np.isin(array, (0, 1)).all():
        raise DataError(f"{path}: variable '{key}' must hold 0/1 multi-hot labels; found values {np.unique(array)[:5]}")
    return array.astype(np.uint8)


def read_mat_trio(root: Path, dataset: str, prefix: str, *, n: int | None, vocab: int | None,
                  classes: int | None, reference_n: int | None = None) -> Source:
    """The DJSRH-family layout: ``<prefix>-iall.mat`` (IAll), ``-yall.mat`` (YAll), ``-lall.mat`` (LAll)."""
    root = Path(root)
    ipath, ypath, lpath = (root / f"{prefix}-{k}all.mat" for k in "iyl")
    with MatFile(ypath) as ymat, MatFile(lpath) as lmat:
        yvar = ymat.var("YAll", expect="the BoW text vectors, N×V")
        yvar.expect_shape((n, vocab), "(samples × vocabulary)")
        lvar = lmat.var("LAll", expect="the labels, N×C")
        lvar.expect_shape((yvar.shape[0], classes), "(samples × classes)")
        bow = yvar.read()
        labels = as_labels(lvar.read(), lpath, "LAll")
    images = ArrayImages(ipath, "IAll", yvar.shape[0])
    source = Source(dataset=dataset, images=images, labels=labels, files=[ipath, ypath, lpath],
                    bow=_compact_bow(bow), reference_n=reference_n,
                    notes=[f"images from {images.describe()}", f"texts from {ypath.name}:YAll ({yvar.format})",
                           f"labels from {lpath.name}:LAll ({lvar.format})"])
    source.check()
    return source


def _compact_bow(bow: np.ndarray) -> np.ndarray:
    """Shipped BoW kept as is, stored compactly: uint8 when it holds small counts, else float32."""
    bow = np.asarray(bow)
    if np.all((bow >= 0) & (bow <= 255) & (bow == np.round(bow))):
        return bow.astype(np.uint8)
    return bow.astype(np.float32)
