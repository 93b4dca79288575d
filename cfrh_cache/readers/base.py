"""What every reader returns: a ``Source`` with the same fields, whatever the on-disk form.

Images stay lazy (a source of rows read by range, from HDF5 arrays or image files) so the
encoder's DataLoader workers can read and decode them; texts, labels and fixed splits are small
enough to hold in memory.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse
from PIL import Image

from cfrh.errors import DataError
from cfrh.images import open_rgb
from cfrh_cache.matfile import MatFile


class ImageSource:
    """Rows of images, read by range. Subclasses must be picklable (DataLoader workers)."""

    kind: str  # "array" (decoded pixels) or "file" (encoded images)

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, start: int, stop: int):
        """Array sources: uint8 (n, 3, H, W). File sources: list of RGB PIL images."""
        raise NotImplementedError

    def place(self) -> dict:
        """Where the images are, for the cache's attributes (search shows it with each hit)."""
        raise NotImplementedError


class ArrayImages(ImageSource):
    """Decoded images stored in a .mat variable (``IAll``), any axis order MATLAB users save.

    ``layout`` names the axes in MATLAB order (as MATLAB's ``size`` shows them; h5py's shape
    reversed), with the letters N (samples), C (colour), H and W, e.g. ``HWCN`` for the DJSRH
    files. Without it the sample axis is the one of length ``n``, the colour axis the one of length
    3, and of the two spatial axes the first is the height (DJSRH's ``transpose(2,1,0)``). When
    that cannot be told (an image side equals the sample count, or the file was not written by
    MATLAB, so height and width may be swapped) the reader refuses and names the readings.
    """

    kind = "array"

    def __init__(self, path: Path, key: str, n: int, layout: str | None = None):
        self.path, self.key, self.n = Path(path), key, n
        with MatFile(self.path) as mat:
            var = mat.var(key, expect="the images, H×W×3×N uint8")
            self.shape, self.format, dtype, by_matlab = var.shape, var.format, var.dtype, var.by_matlab
        if len(self.shape) != 4:
            raise DataError(f"{self.path}: variable '{key}' has shape {self.shape}, expected 4 axes (H×W×3×N)")
        if dtype != np.uint8:
            raise DataError(f"{self.path}: variable '{key}' has dtype {dtype}, expected uint8 pixels")
        axes = self._axes_from(layout) if layout else self._guess(by_matlab)
        self.sample_axis, self.colour_axis, self.height_axis, self.width_axis = axes
        self._mat: MatFile | None = None

    def _shown(self) -> str:
        return "×".join(map(str, self.shape))

    def _axes_from(self, layout: str) -> tuple[int, int, int, int]:
        layout = layout.upper()
        if sorted(layout) != sorted("NCHW"):
            raise DataError(f"--image-layout {layout!r}: expected the four letters N, C, H, W in MATLAB order, "
                            "e.g. HWCN (the DJSRH files)")
        axes = tuple(layout.index(c) for c in "NCHW")
        if self.shape[axes[0]] != self.n or self.shape[axes[1]] != 3:
            raise DataError(f"{self.path}: variable '{self.key}' has MATLAB shape {self._shown()}; --image-layout "
                            f"{layout} puts {self.shape[axes[0]]} samples (expected {self.n}) and "
                            f"{self.shape[axes[1]]} colours (expected 3)")
        return axes

    def _readings(self) -> list[str]:
        """Every layout the shape allows: N on an axis of length n, C on one of length 3."""
        return ["".join(p) for p in itertools.permutations("NCHW")
                if self.shape[p.index("N")] == self.n and self.shape[p.index("C")] == 3]

    def _guess(self, by_matlab: bool) -> tuple[int, int, int, int]:
        candidates = [a for a in (3, 0, 1, 2) if self.shape[a] == self.n]
        if not candidates:
            raise DataError(f"{self.path}: variable '{self.key}' has shape {self.shape}; no axis of length {self.n} "
                            "(the number of samples in the other files)")
        rest = [a for a in range(4) if a != candidates[0]]
        colour = [a for a in rest if self.shape[a] == 3]
        if not colour:
            raise DataError(f"{self.path}: variable '{self.key}' has shape {self.shape}, expected a colour axis of length 3")
        spatial = [a for a in rest if a != colour[0]]
        readings = self._readings()
        if len(candidates) > 1 or len(colour) > 1 or not by_matlab:
            why = (f"the sample count {self.n} equals another axis, so the sample axis cannot be told"
                   if len(candidates) > 1 or len(colour) > 1 else "it has no MATLAB_class attribute (written by h5py "
                   "or another tool, not MATLAB), so height and width may be swapped")
            raise DataError(f"{self.path}: variable '{self.key}' has MATLAB shape {self._shown()} and {why}; "
                            f"possible layouts: {', '.join(readings)}; pass --image-layout with the right one "
                            "(letters in MATLAB order; h5py shows the shape reversed)")
        return candidates[0], colour[0], spatial[0], spatial[1]

    def __len__(self) -> int:
        return self.n

    def __getstate__(self):
        return {**self.__dict__, "_mat": None}  # HDF5 handles don't cross processes; reopen lazily

    @property
    def layout(self) -> str:
        """The axis letters in MATLAB order (what --image-layout takes)."""
        axes = dict(zip((self.sample_axis, self.colour_axis, self.height_axis, self.width_axis), "NCHW"))
        return "".join(axes[a] for a in range(4))

    def place(self) -> dict:
        return {"kind": "array", "file": self.path.name, "key": self.key, "layout": self.layout}

    def read(self, start: int, stop: int) -> np.ndarray:
        if self._mat is None:
            self._mat = MatFile(self.path)
        block = self._mat.var(self.key).take(self.sample_axis, start, stop)
        return np.ascontiguousarray(
            block.transpose(self.sample_axis, self.colour_axis, self.height_axis, self.width_axis))

    def describe(self) -> str:
        return f"{self.path.name}:{self.key} ({self.format}, MATLAB shape {self._shown()}, layout {self.layout})"


class FileImages(ImageSource):
    """Encoded image files (JPEG, PNG, ...) decoded with Pillow."""

    kind = "file"

    def __init__(self, paths: list[Path]):
        self.paths = [Path(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def place(self) -> dict:
        return {"kind": "file"}

    def read(self, start: int, stop: int) -> list[Image.Image]:
        return [open_rgb(self.paths[i], row=i) for i in range(start, stop)]

    def describe(self) -> str:
        return f"{len(self.paths)} image files"


class FeatureRows(ImageSource):
    """Image features computed elsewhere (WIKI's shipped SIFT, VGG-19 ``.npy`` files, clip-retrieval
    output): stage 1 stores them under ``tag`` as they are, instead of running an image encoder."""

    kind = "features"

    def __init__(self, features: np.ndarray, tag: str, origin: dict):
        self.features, self.tag, self.origin = features, tag, origin

    def __len__(self) -> int:
        return len(self.features)

    def place(self) -> dict:
        return {"kind": "features", **self.origin}

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.features[start:stop]

    def describe(self) -> str:
        return f"{self.features.shape[1]}-d features from {self.origin.get('file')}:{self.origin.get('key', '')}"


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
    bow: np.ndarray | scipy.sparse.csr_array | None = None  # shipped text vectors, of kind ``text_kind``
    texts: list[str] | None = None
    label_names: list[str] | None = None
    vocabulary: list[str] | None = None  # words of the shipped BoW columns, where known
    fixed_split: dict[str, np.ndarray] | None = None  # e.g. COCO's query/database rows, 0-based
    reference_n: int | None = None  # size of the full benchmark, to scale protocol sizes down
    image_paths: list[str] | None = None  # absolute; written to the cache, shown by search
    notes: list[str] = field(default_factory=list)
    text_kind: str = "bow"  # "bow" (non-negative counts or weights) or "dense" (LDA topics, embeddings)
    # which of ``files`` each cached table is made from ("images", "texts", "labels", "raw"); a role left
    # out is made from every file, so a change anywhere counts as a change for it
    roles: dict[str, list[Path]] = field(default_factory=dict)
    reading: dict = field(default_factory=dict)  # reader options that decide which samples are rows (shards)

    def files_for(self, role: str) -> list[Path]:
        """The files a table is made from; "raw" (raw texts, their CLIP embeddings) defaults to "texts"."""
        if role == "raw" and role not in self.roles:
            role = "texts"
        return self.roles.get(role, self.files)

    @property
    def n(self) -> int:
        return len(self.images)

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


def _preview(rows: np.ndarray, k: int = 5) -> str:
    shown = ", ".join(map(str, rows[:k].tolist()))
    return shown + (", …" if rows.size > k else "")


def no_layout(image_layout: str | None, what: str) -> None:
    if image_layout:
        raise DataError(f"--image-layout {image_layout}: {what} are decoded from their files; the option is for "
                        "images stored as one array (IAll)")


def as_labels(array, path: Path, key: str) -> np.ndarray:
    """0/1 label matrix as uint8 (dense or MATLAB sparse), refusing anything that is not multi-hot."""
    array = array.toarray() if scipy.sparse.issparse(array) else np.asarray(array)
    if not np.isin(array, (0, 1)).all():
        raise DataError(f"{path}: variable '{key}' must hold 0/1 multi-hot labels; found values {np.unique(array)[:5]}")
    return array.astype(np.uint8)


def read_mat_trio(root: Path, dataset: str, prefix: str, *, n: int | None, vocab: int | None,
                  classes: int | None, reference_n: int | None = None, image_layout: str | None = None) -> Source:
    """The DJSRH-family layout: ``<prefix>-iall.mat`` (IAll), ``-yall.mat`` (YAll), ``-lall.mat`` (LAll)."""
    root = Path(root)
    ipath, ypath, lpath = (root / f"{prefix}-{k}all.mat" for k in "iyl")
    with MatFile(ypath) as ymat, MatFile(lpath) as lmat:
        yvar = ymat.var("YAll", expect="the BoW text vectors, N×V")
        yvar = yvar.expect_shape((n, vocab), "(samples × vocabulary)")
        lvar = lmat.var("LAll", expect="the labels, N×C")
        lvar = lvar.expect_shape((yvar.shape[0], classes), "(samples × classes)")
        bow = yvar.read()
        labels = as_labels(lvar.read(), lpath, "LAll")
    images = ArrayImages(ipath, "IAll", yvar.shape[0], image_layout)
    source = Source(dataset=dataset, images=images, labels=labels, files=[ipath, ypath, lpath],
                    bow=shipped_text(bow, ypath, "YAll"), reference_n=reference_n,
                    roles={"images": [ipath], "texts": [ypath], "labels": [lpath]},
                    notes=[f"images from {images.describe()}", f"texts from {ypath.name}:YAll ({yvar.format})",
                           f"labels from {lpath.name}:LAll ({lvar.format})"])
    source.check()
    return source


def shipped_text(text, path: Path, key: str, kind: str = "bow"):
    """Shipped text vectors kept as they are, stored compactly (a BoW of small counts as uint8,
    else float32; sparse stays sparse). NaN or Inf is refused, and so are negative values in a
    BoW (counts or weights); dense features (Doc2Vec, embeddings) may be negative."""
    sparse = scipy.sparse.issparse(text)
    values = text.data if sparse else np.asarray(text)
    bad = ~np.isfinite(values) | ((values < 0) if kind == "bow" else False)
    if bad.any():
        rows = (np.unique(np.searchsorted(text.indptr, np.flatnonzero(bad), side="right") - 1) if sparse
                else np.flatnonzero(bad.reshape(bad.shape[0], -1).any(1)))
        what = "NaN/Inf" if not np.isfinite(values).all() else "negative values"
        hint = ("a BoW must be non-negative counts or weights (dense features: --text-kind dense)" if kind == "bow"
                else "clean those rows first")
        raise DataError(f"{path}: variable '{key}' has {what} in rows {_preview(rows)} (0-based); {hint}")
    small = kind == "bow" and bool(np.all((values <= 255) & (values == np.round(values))))
    dtype = np.uint8 if small else np.float32
    if sparse:
        return scipy.sparse.csr_array(text, dtype=dtype)
    return values.astype(dtype)
