"""The feature cache: one Zarr (v3) group per dataset, chunked along the sample axis.

Every array carries ``complete`` in its attributes, set last, after the data and its checksum;
``read`` refuses an array without it, so a half-written array is never taken as finished.
Large arrays are written chunk by chunk with a per-chunk progress flag (``_progress/<name>``,
one flag per chunk, so ranks of a distributed run never write the same object): an interrupted
run redoes only the chunks not flagged, and a chunk is flagged only after its data is written.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import scipy.sparse
import zarr
from PIL import Image
from zarr.codecs import BytesCodec, ZstdCodec

from cfrh import __version__
from cfrh.errors import CacheError, DataError
from cfrh.fsio import now
from cfrh.images import open_rgb
from cfrh_cache.matfile import MatFile

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")  # a plain name: a cache's folder, an imported encoder's


def check_name(name: str) -> str:
    """A dataset's cache name: a plain folder name (no path, no ``..``, not empty), so that a cache
    is always CACHE_DIR/NAME and never lands outside the cache root or at it."""
    if not isinstance(name, str) or not NAME.match(name) or ".." in name:
        raise DataError(f"dataset name {name!r}: expected a plain name (letters, digits and . _ + -, not starting "
                        "with a dot, no / or ..); it names the folder CACHE_DIR/NAME")
    return name


ROWS = "row"  # the one name of the sample axis, shared by every per-row array (xarray aligns them)
STRINGS = ("row r's string is the UTF-8 bytes {name}/utf8[{name}/offsets[r]:{name}/offsets[r + 1]] "
           "(Cache.read_strings reads them)")


def dimension_names(name: str, ndim: int) -> tuple[str, ...]:
    """Names of an array's axes (Zarr v3 ``dimension_names``, what xarray reads): per-row arrays
    (features, text vectors, labels) share ``row``; every other axis is named for its array, so
    two axes share a name only where they are the same axis."""
    safe = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")
    per_row = (name.startswith(("image/", "text/")) and not name.startswith(("text/bow_csr", "text/raw"))
               and "/offsets" not in name and "/utf8" not in name) or name == "labels"
    names = [ROWS if per_row else f"{safe}_0"] + [f"{safe}_{i}" for i in range(1, ndim)]
    if name.endswith("/offsets"):
        names[0] = "row_edge"  # rows + 1 offsets, in every string array alike
    return tuple(names[:ndim])


FORMAT_VERSION = 1  # the layout and the bytes: arrays below, each stored with CODECS
CHUNK_ROWS = 1024


def codecs() -> dict:
    """Every array's codecs, set here rather than left to zarr's defaults (which may change)."""
    return {"serializer": BytesCodec(endian="little"), "compressors": [ZstdCodec(level=0, checksum=False)]}


def array_sha256(array: zarr.Array, rows: int = 16384) -> str:
    """sha256 of the array's C-order bytes, read back in slabs (what ``verify`` recomputes)."""
    digest = hashlib.sha256()
    for start in range(0, array.shape[0], rows):
        digest.update(np.ascontiguousarray(array[start:start + rows]).tobytes())
    return digest.hexdigest()


class Cache:
    """A dataset's cache group. ``Cache.open(path)`` reads; ``Cache.create(path, dataset, n)`` writes."""

    def __init__(self, path: Path, group: zarr.Group):
        self.path, self.group = Path(path), group

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> Cache:
        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise CacheError(f"{path}: no cache here (no zarr.json); write one with `cfrh-cache features`")
        group = zarr.open_group(path, mode=mode, zarr_format=3)
        version = group.attrs.get("format_version")
        if version != FORMAT_VERSION:
            raise CacheError(f"{path}: cache format version {version}, this cfrh reads version {FORMAT_VERSION}; "
                             "rebuild it with `cfrh-cache features`")
        return cls(path, group)

    @classmethod
    def create(cls, path: str | Path, dataset: str, n: int) -> Cache:
        """Open for writing, creating the group if needed; an existing cache must be the same dataset."""
        path = Path(path)
        if (path / "zarr.json").is_file():
            cache = cls.open(path, mode="a")
            if cache.attrs.get("dataset") != dataset or cache.attrs.get("n") != n:
                raise CacheError(f"{path}: holds dataset {cache.attrs.get('dataset')!r} with n={cache.attrs.get('n')}, "
                                 f"not {dataset!r} with n={n}; use another --cache-dir or delete it")
            return cache
        attrs = {"dataset": dataset, "n": n, "format_version": FORMAT_VERSION, "cfrh_version": __version__,
                 "created": now()}
        # one write of zarr.json with its attributes: a kill can never leave a group without its format
        group = zarr.open_group(path, mode="a", zarr_format=3, attributes=attrs)
        return cls(path, group)

    @property
    def attrs(self) -> dict:
        return self.group.attrs.asdict()

    def update_attrs(self, **values) -> None:
        self.group.attrs.update({**values, "updated": now()})

    # -- reading -----------------------------------------------------------------------------
    def has(self, name: str) -> bool:
        return name in self.group and bool(self.group[name].attrs.get("complete", False))

    def array(self, name: str) -> zarr.Array:
        if name not in self.group:
            raise CacheError(f"{self.path}: no array '{name}' (has: {', '.join(self.names()) or 'nothing'})")
        array = self.group[name]
        if not array.attrs.get("complete", False):
            raise CacheError(f"{self.path}: array '{name}' is incomplete (an interrupted run); "
                             "run `cfrh-cache features` again to finish it")
        return array

    def read(self, name: str) -> np.ndarray:
        return self.array(name)[...]

    def names(self, complete_only: bool = False) -> list[str]:
        out = []
        for name, node in self.group.members(max_depth=None):
            if isinstance(node, zarr.Array) and not name.startswith("_progress"):
                if not complete_only or node.attrs.get("complete", False):
                    out.append(name)
        return sorted(out)

    def encoders(self) -> list[str]:
        """Complete image feature arrays, as ``<model>__<pretrained>`` tags."""
        return [n.split("/", 1)[1] for n in self.names(complete_only=True) if n.startswith("image/")]

    # The text side. The dataset's own text is ``text/bow`` (counts or weights; CSR in
    # ``text/bow_csr/{data,indices,indptr}`` when the vocabulary is large) or ``text/dense`` (dense
    # features: LDA topics, Doc2Vec, imported embeddings); the group's ``text_kind`` says which.
    # Text encoders (CLIP text towers) add dense ``text/<model>__<pretrained>``. These methods are
    # the only code that knows where a text array lives and how it is stored.
    TEXT_ARRAYS = ("text/bow", "text/bow_csr/data", "text/bow_csr/indices", "text/bow_csr/indptr", "text/dense")
    NOT_TEXT_ENCODERS = ("bow", "bow_csr", "dense", "raw")

    def text_array(self) -> str | None:
        """The complete array that marks the dataset's own text as written (None: not written)."""
        return next((n for n in ("text/bow", "text/bow_csr/indptr", "text/dense") if self.has(n)), None)

    def text_kind(self, text: str | None = None) -> str:
        """``bow`` or ``dense``: of the dataset's own text (``text`` None or "bow"), or of a text encoder's."""
        if text in (None, "bow", "dense"):
            return "dense" if self.text_array() == "text/dense" else "bow"
        return "dense"

    def text_encoders(self) -> list[str]:
        """Complete text-encoder arrays (``text/<tag>``), as tags."""
        return [n.split("/", 1)[1] for n in self.names(complete_only=True)
                if n.startswith("text/") and n.split("/")[1] not in self.NOT_TEXT_ENCODERS]

    def text_name(self, text: str | None = None) -> str:
        """The array of a text input: the dataset's own (None, "bow" or "dense") or a text encoder's tag."""
        if text in (None, "bow", "dense"):
            own = self.text_array()
            if own is None:
                raise CacheError(f"{self.path}: no complete text array; run `cfrh-cache features` again")
            return own
        if not self.has(f"text/{text}"):
            raise CacheError(f"{self.path}: no complete text/{text} (text inputs: bow or dense, "
                             f"{', '.join(self.text_encoders()) or 'no text encoder'})")
        return f"text/{text}"

    def read_text(self, text: str | None = None) -> np.ndarray | scipy.sparse.csr_array:
        name = self.text_name(text)
        if name != "text/bow_csr/indptr":
            return self.read(name)
        data, indices, indptr = (self.read(f"text/bow_csr/{k}") for k in ("data", "indices", "indptr"))
        shape = tuple(self.array("text/bow_csr/indptr").attrs["shape"])
        return scipy.sparse.csr_array((data, indices, indptr), shape=shape)

    def text_rows(self, rows, text: str | None = None) -> np.ndarray:
        """float32 text rows of some cache rows, reading only those rows where stored dense."""
        rows = np.asarray(rows, np.int64)
        name = self.text_name(text)
        if name == "text/bow_csr/indptr":
            return dense_rows(self.read_text(text), rows)
        return np.asarray(self.array(name).get_orthogonal_selection((rows,)), np.float32)

    def read_strings(self, name: str, rows=None) -> list[str]:
        """Strings written by ``write_strings`` (all, or only ``rows``, reading only those bytes)."""
        offsets, data = self.array(f"{name}/offsets"), self.array(f"{name}/utf8")
        if rows is None:
            ends, blob = offsets[...], data[...].tobytes()
            return [blob[a:b].decode("utf-8") for a, b in zip(ends[:-1], ends[1:])]
        rows = np.asarray(rows, np.int64)
        starts = offsets.get_orthogonal_selection((rows,))
        stops = offsets.get_orthogonal_selection((rows + 1,))
        return [data[int(a):int(b)].tobytes().decode("utf-8") if b > a else "" for a, b in zip(starts, stops)]

    def row_image(self, row: int):
        """The image of a row as stage 1 saw it: its file, or its row of the image array (None where
        neither can be read any more: a moved dataset, precomputed features)."""
        path = self.read_strings("meta/image_path", [row])[0] if self.has("meta/image_path/offsets") else None
        return row_image(self.attrs.get("images", {}), self.attrs.get("root"), row, path)

    def split(self) -> dict[str, np.ndarray]:
        return {k: self.read(f"split/{k}") for k in ("query", "database", "train", "val")}

    # -- writing -----------------------------------------------------------------------------
    def write(self, name: str, data: np.ndarray, attrs: dict | None = None, chunk_rows: int = CHUNK_ROWS) -> None:
        """Write a whole (small) array: data first, then checksum and ``complete``."""
        data = np.asarray(data)
        chunks = (min(chunk_rows, max(1, data.shape[0])),) + data.shape[1:] if data.ndim else ()
        array = self.group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=chunks,
                                        attributes={"complete": False}, overwrite=True,
                                        dimension_names=dimension_names(name, data.ndim), **codecs())
        array[...] = data
        array.attrs.update({**(attrs or {}), "sha256": array_sha256(array), "complete": True, "written": now()})

    def chunked(self, name: str, shape: tuple[int, ...], dtype, attrs: dict, chunk_rows: int = CHUNK_ROWS,
                resume: bool = True) -> ChunkedArray:
        """Create (or reopen to resume) an array written chunk by chunk."""
        if name in self.group and resume:
            array = self.group[name]
            if tuple(array.shape) != tuple(shape) or array.dtype != np.dtype(dtype):
                raise CacheError(f"{self.path}: array '{name}' exists with shape {array.shape} {array.dtype}, "
                                 f"expected {shape} {np.dtype(dtype)}; delete it to rebuild")
            if "_progress/" + name in self.group:
                return ChunkedArray(array, self.group["_progress/" + name])
        array = self.group.create_array(name, shape=shape, dtype=dtype, chunks=(chunk_rows,) + tuple(shape[1:]),
                                        fill_value=0, attributes={**attrs, "complete": False}, overwrite=True,
                                        dimension_names=dimension_names(name, len(shape)), **codecs())
        n_chunks = -(-shape[0] // chunk_rows)
        progress = self.group.create_array("_progress/" + name, shape=(n_chunks,), dtype="uint8", chunks=(1,),
                                           fill_value=0, overwrite=True,
                                           dimension_names=dimension_names("_progress/" + name, 1), **codecs())
        return ChunkedArray(array, progress)

    def write_strings(self, name: str, strings: list[str], attrs: dict | None = None) -> None:
        """One string per row (raw texts, image paths) as UTF-8 bytes and row offsets, chunked like
        any array, so a reader of a few rows reads only their bytes."""
        encoded = [s.encode("utf-8") for s in strings]
        offsets = np.zeros(len(encoded) + 1, np.int64)
        offsets[1:] = np.cumsum([len(b) for b in encoded])
        described = {**(attrs or {}), "strings": STRINGS.format(name=name)}
        self.write(f"{name}/utf8", np.frombuffer(b"".join(encoded), np.uint8), described, chunk_rows=1 << 20)
        self.write(f"{name}/offsets", offsets, described, chunk_rows=1 << 16)

    def write_text(self, text, kind: str, attrs: dict) -> None:
        """The dataset's own text: dense features as ``text/dense``; a BoW dense (N, V) when V is
        moderate, else as the three CSR arrays (``text/bow_csr``). Records ``text_kind``."""
        self.update_attrs(text_kind=kind)
        if kind == "dense":
            dense = text.toarray() if scipy.sparse.issparse(text) else np.asarray(text)
            self.write("text/dense", dense.astype(np.float32), attrs)
            return
        bow = text
        if scipy.sparse.issparse(bow) and bow.shape[1] > 4096:
            bow = scipy.sparse.csr_array(bow)
            for key in ("data", "indices", "indptr"):
                extra = {"shape": list(bow.shape), **attrs} if key == "indptr" else {"made_from": attrs.get("made_from")}
                self.write(f"text/bow_csr/{key}", getattr(bow, key), extra, chunk_rows=1 << 20)
            return
        dense = bow.toarray() if scipy.sparse.issparse(bow) else np.asarray(bow)
        self.write("text/bow", dense, attrs)


def dense_rows(matrix, rows) -> np.ndarray:
    """float32 rows of a dense or CSR (N, V) matrix held in memory."""
    picked = matrix[np.asarray(rows)]
    return np.asarray(picked.toarray() if scipy.sparse.issparse(picked) else picked, np.float32)


class ChunkedArray:
    """An array being filled chunk by chunk; ``pending()`` lists what is left after an interruption."""

    def __init__(self, array: zarr.Array, progress: zarr.Array):
        self.array, self.progress = array, progress
        self.chunk_rows = array.chunks[0]

    def pending(self, ranks: int = 1, rank: int = 0) -> list[int]:
        """Unfinished chunks; with several ranks, this rank's share (chunk i goes to rank i % ranks)."""
        done = self.progress[...]
        return [int(i) for i in np.flatnonzero(done == 0) if i % ranks == rank]

    def rows(self, chunk: int) -> tuple[int, int]:
        start = chunk * self.chunk_rows
        return start, min(start + self.chunk_rows, self.array.shape[0])

    def write_chunk(self, chunk: int, data: np.ndarray) -> None:
        start, stop = self.rows(chunk)
        self.array[start:stop] = data
        self.progress[chunk] = 1  # only after the data: a chunk flagged done is on disk

    def finish(self, attrs: dict | None = None) -> None:
        if not self.progress[...].all():
            missing = np.flatnonzero(self.progress[...] == 0)
            raise CacheError(f"{self.array.name}: chunks {missing[:10].tolist()} not written; cannot mark complete")
        self.array.attrs.update({**(attrs or {}), "sha256": array_sha256(self.array), "complete": True,
                                 "written": now()})


def row_image(place: dict, root: str | None, row: int, path: str | None = None) -> Image.Image | None:
    """The image of a cache row: its file where the dataset has files, else its row of the image
    array (``place``: the cache's ``images`` attribute). None where neither can be read any more
    (a moved dataset, precomputed features): pages and figures then show the row without it."""
    try:
        if path:
            return open_rgb(path, row) if Path(path).is_file() else None
        if place.get("kind") == "array" and root:
            file = Path(root) / place["file"]
            if not file.is_file():
                return None
            layout = place.get("layout", "HWCN")
            with MatFile(file) as mat:
                block = mat.var(place["key"]).take(layout.index("N"), row, row + 1)
            order = [layout.index(c) for c in "NHWC"]
            return Image.fromarray(np.ascontiguousarray(block.transpose(order)[0]).astype(np.uint8), "RGB")
    except DataError:
        return None
    return None
