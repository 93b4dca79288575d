"""``cfrh-cache import``: features computed elsewhere into a cache, by the same store, provenance
and split rules as ``features``.

An array is named ``FILE[:KEY]``: a ``.npy`` (no key), an ``.npz`` entry, a ``.mat`` variable
(v5 or v7.3, read in MATLAB order; ``a/b`` reaches into a struct), an ``.h5``/``.hdf5`` dataset
(as h5py shows it), a ``.parquet`` column (a list column of vectors, or without a key every
numeric column side by side; needs pyarrow) or a clip-retrieval output folder (its
``img_emb/img_emb_*.npy`` for images, ``text_emb/text_emb_*.npy`` for texts, in file order).
Split files hold row numbers (0-based; 1-based in ``.mat`` files, as MATLAB counts) or a 0/1 mask.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse

from cfrh.errors import DataError
from cfrh.fsio import now, sha256_file
from cfrh_cache.matfile import MatFile
from cfrh_cache.readers.base import FeatureRows, Source, as_labels, shipped_text
from cfrh_cache.store import NAME, Cache, check_name

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    """One array read from a user's file, with what names it."""

    values: np.ndarray | scipy.sparse.csr_array
    file: Path
    key: str
    files: list[Path]  # every file it was read from (clip-retrieval: several)

    @property
    def where(self) -> str:
        return f"{self.file}" + (f":{self.key}" if self.key else "")


def split_spec(spec: str) -> tuple[Path, str]:
    """``FILE[:KEY]``; a colon inside a path (Windows drives) is left alone when no file has it."""
    if ":" in spec and not Path(spec).exists():
        file, key = spec.rsplit(":", 1)
        return Path(file), key
    return Path(spec), ""


def check_encoder_name(encoder_name: str) -> None:
    """An imported encoder's name: a plain name (as a cache's), since it names ``image/<name>``."""
    if not NAME.match(encoder_name):
        raise DataError(f"--encoder-name {encoder_name!r}: use letters, digits and . _ + - (it names image/<name>)")


def load_array(spec: str, side: str = "image") -> Loaded:
    """The array ``spec`` names; ``side`` picks a clip-retrieval folder's embeddings."""
    path, key = split_spec(spec)
    if path.is_dir():
        return _clip_retrieval(path, side)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return Loaded(_np_load(path, key), path, "", [path])
    if suffix == ".npz":
        with np.load(path) as archive:
            key = _only_key(path, key, list(archive.files))
            return Loaded(archive[key], path, key, [path])
    if suffix == ".mat":
        with MatFile(path) as mat:
            key = _only_key(path, key, mat.keys())
            return Loaded(mat.var(key).read(), path, key, [path])
    if suffix in (".h5", ".hdf5"):
        with h5py.File(path, "r") as f:
            names: list[str] = []
            f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
            key = _only_key(path, key, names)
            return Loaded(f[key][()], path, key, [path])
    if suffix == ".parquet":
        return Loaded(_parquet(path, key), path, key, [path])
    raise DataError(f"{path}: unknown feature file type {suffix!r}; expected .npy, .npz, .mat, .h5, .parquet "
                    "or a clip-retrieval output folder")


def _np_load(path: Path, key: str) -> np.ndarray:
    if key:
        raise DataError(f"{path}: a .npy file holds one array; drop ':{key}'")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{path}: not a plain NumPy array ({exc})") from None


def _only_key(path: Path, key: str, keys: list[str]) -> str:
    if key:
        if key not in keys:
            raise DataError(f"{path}: no array '{key}'; it has: {', '.join(keys) or 'nothing'}")
        return key
    if len(keys) != 1:
        raise DataError(f"{path}: holds {len(keys)} arrays ({', '.join(keys)}); name one as {path.name}:KEY")
    return keys[0]


def _parquet(path: Path, key: str) -> np.ndarray:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install 'cfrh[parquet]')") from None
    table = pq.read_table(path)
    lists = [c for c in table.column_names if pa.types.is_list(table.schema.field(c).type)
             or pa.types.is_large_list(table.schema.field(c).type) or pa.types.is_fixed_size_list(table.schema.field(c).type)]
    if not key:
        numeric = [c for c in table.column_names if c not in lists and np.issubdtype(np.asarray(table.column(c)).dtype,
                                                                                   np.number)]
        if len(lists) == 1:
            key = lists[0]
        elif lists or len(numeric) < 2:
            found = ", ".join(lists or numeric) or "none"
            raise DataError(f"{path}: {'several vector columns' if lists else 'no feature matrix'} (candidates: "
                            f"{found}); name the column as {path.name}:COLUMN")
        else:  # a feature per column: every numeric column side by side
            return np.stack([np.asarray(table.column(c)) for c in numeric], axis=1)
    if key not in table.column_names:
        raise DataError(f"{path}: no column '{key}'; it has: {', '.join(table.column_names)}")
    column = table.column(key).to_pylist()
    if key not in lists:
        return np.asarray(column)
    lengths = {len(v) for v in column if v is not None}
    for i, v in enumerate(column):
        if v is None or any(x is None for x in v):
            raise DataError(f"{path}:{key}: row {i} is {'null' if v is None else 'a vector with nulls'}; every row "
                            "needs a complete vector")
        if len(v) != len(column[0]):
            raise DataError(f"{path}:{key}: row {i} has {len(v)} values, row 0 has {len(column[0])} (ragged "
                            f"vectors, lengths {sorted(lengths)[:5]})")
    return np.asarray(column, dtype=np.float64)


def _clip_retrieval(folder: Path, side: str) -> Loaded:
    sub, stem = ("img_emb", "img_emb") if side == "image" else ("text_emb", "text_emb")
    parts = sorted((folder / sub).glob(f"{stem}_*.npy"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    if not parts:
        raise DataError(f"{folder}: no {sub}/{stem}_*.npy (a clip-retrieval output folder has img_emb/, "
                        "text_emb/ and metadata/)")
    return Loaded(np.concatenate([_np_load(p, "") for p in parts]), folder, sub, parts)


def check_rows(loaded: Loaded, n: int, what: str) -> np.ndarray:
    """A 2-D (N, D) array of finite real values, with the transposed case named."""
    values = loaded.values
    if np.iscomplexobj(values.data if scipy.sparse.issparse(values) else np.asarray(values)):
        raise DataError(f"{loaded.where}: {what} hold complex numbers; expected real features (if the real part "
                        "is what you mean, save that)")
    if scipy.sparse.issparse(values):
        values = scipy.sparse.csr_array(values)
    elif np.asarray(values).ndim != 2:
        raise DataError(f"{loaded.where}: {what} of shape {np.shape(values)}; expected N×D, one row per pair")
    rows, cols = values.shape
    if rows != n:
        hint = " (it looks transposed: save it as N×D)" if cols == n else ""
        raise DataError(f"{loaded.where}: {what} has {rows} rows, the image features {n}{hint}")
    if not scipy.sparse.issparse(values):
        bad = np.flatnonzero(~np.isfinite(np.asarray(values, np.float64)).all(1))
        if bad.size:
            raise DataError(f"{loaded.where}: {what} has NaN/Inf in rows {bad[:10].tolist()}")
    return values


MANY_SAME = 0.1  # the share of identical (or all-zero) feature rows above which an import warns


def check_variance(values: np.ndarray, where: str, what: str, notes: list[str] | None = None) -> None:
    """Features that tell no row from another (all-zero or constant: a failed extraction) are
    refused; more than MANY_SAME of the rows identical or all-zero is said (a warning and a note)."""
    dense = values.toarray() if scipy.sparse.issparse(values) else np.asarray(values)
    if dense.shape[0] > 1 and not (dense != dense[:1]).any():
        kind = "all zero" if not dense.any() else "every row the same"
        raise DataError(f"{where}: {what} have no variance ({kind}); a failed extraction? Nothing can be "
                        "learned or retrieved from them")
    zero = int((~dense.any(1)).sum())
    _, counts = np.unique(dense, axis=0, return_counts=True)
    same = int(counts[counts > 1].sum())
    for count, kind in ((zero, "all-zero"), (same, "identical to another row")):
        if count > MANY_SAME * dense.shape[0]:
            message = (f"{where}: {count} of {dense.shape[0]} {what} rows ({count / dense.shape[0]:.0%}) are {kind} "
                       f"(more than {MANY_SAME:.0%}): their codes will coincide")
            log.warning(message)
            if notes is not None:
                notes.append(message)


def as_label_matrix(loaded: Loaded, n: int, notes: list[str] | None = None) -> np.ndarray:
    """Multi-hot rows, or a vector of class numbers (one label each) made one-hot, its columns
    the classes present (ids with gaps, or as large as 1,440,764, are renumbered, and it is said)."""
    values = loaded.values.toarray() if scipy.sparse.issparse(loaded.values) else np.asarray(loaded.values)
    if values.ndim == 1 or (values.ndim == 2 and 1 in values.shape and values.size == n and n > 1):
        classes = values.ravel()
        if classes.dtype.kind == "f" and np.isnan(classes).any():
            bad = np.flatnonzero(np.isnan(classes))
            raise DataError(f"{loaded.where}: a class-number vector has NaN in rows {bad[:10].tolist()}")
        if classes.dtype.kind not in "iuf" or not np.all(classes == np.round(classes)) or classes.min() < 0:
            odd = classes[(classes != np.round(classes)) | (classes < 0)] if classes.dtype.kind in "iuf" else classes
            raise DataError(f"{loaded.where}: a label vector must hold class numbers (integers ≥ 0); found "
                            f"{odd[:5].tolist()}")
        ids, column = np.unique(classes.astype(np.int64), return_inverse=True)
        first = int(ids[0]) if int(ids[0]) in (0, 1) else 0
        if ids[-1] - first + 1 != ids.size and notes is not None:  # contiguous 0- or 1-based ids stay as they are
            notes.append(f"labels {loaded.where}: class numbers {int(ids[0])}..{int(ids[-1])} renumbered to the "
                         f"{ids.size} classes present (columns in the order of their numbers)")
        onehot = np.zeros((n, ids.size), np.uint8)
        onehot[np.arange(n), column.ravel()] = 1
        return onehot
    check_rows(loaded, n, "labels")
    return as_labels(values, loaded.file, loaded.key or "(the array)")


def as_rows(loaded: Loaded, n: int) -> np.ndarray:
    """Row numbers of a split file: 0-based (1-based for .mat files) or a 0/1 mask of n rows."""
    values = np.asarray(loaded.values).ravel()
    zero_one = values.dtype.kind in "biuf" and np.isin(values, (0, 1)).all()
    mask = values.dtype == bool or (values.size == n and zero_one and (values.dtype.kind == "u" or n > 2))
    if mask:
        return np.flatnonzero(values).astype(np.int64)
    if not np.all(values == np.round(values)):
        raise DataError(f"{loaded.where}: expected row numbers (integers) or a 0/1 mask of {n} rows")
    rows = values.astype(np.int64) - (1 if loaded.file.suffix.lower() == ".mat" else 0)
    if rows.size == 0 or rows.min() < 0 or rows.max() >= n:
        base = "1-based (a .mat file)" if loaded.file.suffix.lower() == ".mat" else "0-based"
        raise DataError(f"{loaded.where}: row numbers must be {base} in range for {n} rows; found "
                        f"{int(values.min())}..{int(values.max())}")
    if np.unique(rows).size != rows.size:
        raise DataError(f"{loaded.where}: repeats row numbers")
    return np.sort(rows)


def import_source(name: str, image: str, text: str, labels: str, query: str | None = None,
                  database: str | None = None, train: str | None = None, text_kind: str = "bow",
                  encoder_name: str = "imported") -> Source:
    """A ``Source`` of precomputed arrays, checked across files (rows, values, split rules)."""
    check_encoder_name(encoder_name)
    if text_kind not in ("bow", "dense"):
        raise DataError(f"--text-kind {text_kind!r}: expected bow or dense")
    check_name(name)
    img = load_array(image, "image")
    features = check_rows(img, np.shape(img.values)[0], "image features")
    if scipy.sparse.issparse(features):
        features = features.toarray()
    n = features.shape[0]
    said: list[str] = []
    check_variance(features, img.where, "image features", said)
    txt = load_array(text, "text")
    words = shipped_text(check_rows(txt, n, "text"), txt.file, txt.key or "(the array)", text_kind)
    lab = load_array(labels, "labels")
    label_matrix = as_label_matrix(lab, n, said)
    files = list(dict.fromkeys([*img.files, *txt.files, *lab.files]))
    notes = [f"imported: image {img.where} ({features.shape[1]}-d), text {txt.where} ({text_kind}, "
             f"{words.shape[1]}-d), labels {lab.where} ({label_matrix.shape[1]} classes)", *said]
    fixed = None
    if query or database or train:
        if not (query and database):
            raise DataError("--query and --database go together (--train is optional: without it the protocol "
                            "draws the training rows from the database)")
        given = {k: load_array(v) for k, v in (("query", query), ("database", database), ("train", train)) if v}
        fixed = {k: as_rows(v, n) for k, v in given.items()}
        files += [f for v in given.values() for f in v.files]
        _check_split(fixed, n, {k: v.where for k, v in given.items()})
        notes.append("split from " + ", ".join(f"{k} {v.where}" for k, v in given.items()))
    source = Source(name, FeatureRows(features, encoder_name, {"file": img.file.name, "key": img.key}), label_matrix,
                    list(dict.fromkeys(files)), bow=words, text_kind=text_kind, fixed_split=fixed, notes=notes,
                    roles={"images": img.files, "texts": txt.files, "labels": [*lab.files, *(
                        f for k in ("query", "database", "train") if fixed and k in fixed for f in given[k].files)]})
    source.check()
    return source


def _check_split(split: dict[str, np.ndarray], n: int, where: dict[str, str]) -> None:
    overlap = np.intersect1d(split["query"], split["database"])
    if overlap.size:
        raise DataError(f"{where['query']} and {where['database']}: {overlap.size} rows are both query and database "
                        f"(e.g. {overlap[:5].tolist()})")
    left = np.setdiff1d(np.arange(n), np.union1d(split["query"], split["database"]))
    if left.size:
        raise DataError(f"{where['query']} and {where['database']}: {left.size} of {n} rows are neither query nor "
                        f"database (e.g. {left[:5].tolist()}); drop them from the feature files or add them")
    if "train" in split and not np.isin(split["train"], split["database"]).all():
        raise DataError(f"{where['train']}: training rows must be database rows")


def add_image_features(cache_path: str | Path, image: str, encoder_name: str) -> str:
    """Precomputed image features of an existing cache's rows, as one more encoder
    (``image/<name>``) beside the ones stage 1 computed: compared by ``--encoder`` and
    ``make table ENCODERS=…``. The rows must be the cache's rows, in its order."""
    check_encoder_name(encoder_name)
    cache = Cache.open(cache_path, mode="a")
    n = int(cache.attrs["n"])
    loaded = load_array(image, "image")
    values = check_rows(loaded, n, "image features")
    values = values.toarray() if scipy.sparse.issparse(values) else np.asarray(values)
    check_variance(values, loaded.where, "image features")
    name = f"image/{encoder_name}"
    origin = {"file": loaded.file.name, "key": loaded.key}
    record = {"imported": {f.name: sha256_file(f) for f in loaded.files}, "origin": origin}
    if cache.has(name):
        if cache.array(name).attrs.get("made_from") == record:
            return name
        raise DataError(f"{cache.path}: {name} exists, made from other files; choose another --encoder-name")
    cache.write(name, values.astype(np.float16), {"made_from": record})
    encoders = cache.attrs.get("encoders", {})
    encoders[encoder_name] = {"model": "precomputed", "pretrained": "file", "origin": origin,
                              "dim": int(values.shape[1]), "dtype": "float16", "imported": now()}
    cache.update_attrs(encoders=encoders)
    return name
