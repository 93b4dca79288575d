"""Codes out, in the forms other tools read: ``cfrh export RUN --to codes.parquet`` or ``codes.npy``.

One row per coded item (the database, then the test queries), with its cache row, its split,
its labels (as class indices), its image and text codes as ±1 and packed for binary indexes
(byte ``i // 8``, bit ``i % 8``: faiss's ``IndexBinaryFlat`` layout; ``ceil(K / 8)`` bytes), and
with ``real=True`` the model's real-valued outputs before the sign. Parquet (pyarrow) serves
pandas, DuckDB, Spark and vector databases; a ``.npy`` structured array serves NumPy and faiss
without any other library. Written beside the target and renamed into place.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cfrh.errors import ConfigError
from cfrh.fsio import atomic_write
from cfrh_cache.store import Cache
from cfrh_search.model import load_model, model_record
from cfrh_train.results import read_result

FORMATS = (".parquet", ".npy")
SIDES = ("image", "text")


def packed(codes: np.ndarray) -> np.ndarray:
    """±1 codes (n, K) as bytes (n, ceil(K/8)), bit i in byte i // 8 at position i % 8 (faiss's order)."""
    return np.packbits(np.asarray(codes) > 0, axis=1, bitorder="little")


def real_outputs(run_folder: Path, cache: Cache, rows: np.ndarray, result: dict) -> dict[str, np.ndarray]:
    """The model's real-valued codes of cache rows (image from image features, text from text)."""
    method = load_model(run_folder, model_record(result), "train the run again")
    image = np.asarray(cache.read(f"image/{result['encoder']['tag']}")[rows], np.float32)
    text = cache.text_rows(rows, result["config"].get("text"))
    with torch.no_grad():
        ci, ct = method.encode(torch.from_numpy(image), torch.from_numpy(np.asarray(text, np.float32)))
    return {"image": ci.numpy(), "text": ct.numpy()}


def export_codes(run_folder: str | Path, out: str | Path, cache_dir: str | Path = "cache", real: bool = False) -> Path:
    """Write a run's codes to ``out`` (.parquet or .npy); returns it."""
    run_folder, out = Path(run_folder), Path(out)
    if out.suffix not in FORMATS:
        raise ConfigError(f"--to {out}: expected a file ending in {' or '.join(FORMATS)}")
    if out.is_dir():
        raise ConfigError(f"--to {out}: a folder; give the file's name, e.g. {out / ('codes' + FORMATS[0])}")
    result = read_result(run_folder)
    codes = np.load(run_folder / "codes.npz")
    cache = Cache.open(Path(cache_dir) / result["dataset"])
    rows = np.concatenate([codes["database_index"], codes["query_index"]]).astype(np.int64)
    split = np.array(["database"] * len(codes["database_index"]) + ["query"] * len(codes["query_index"]))
    signs = {side: np.concatenate([codes[f"database_{side}"], codes[f"query_{side}"]]).astype(np.int8) for side in SIDES}
    labels = cache.array("labels").get_orthogonal_selection((rows,))
    outputs = real_outputs(run_folder, cache, rows, result) if real else {}
    columns = {"row": rows, "split": split, "labels": labels,
               **{f"{side}_code": signs[side] for side in SIDES}, **{f"{side}_packed": packed(signs[side]) for side in SIDES},
               **{f"{side}_real": outputs[side] for side in outputs}}
    write = _parquet if out.suffix == ".parquet" else _npy
    atomic_write(out, lambda tmp: write(columns, Path(tmp), result))
    return out


def _npy(columns: dict[str, np.ndarray], path: Path, result: dict) -> None:
    """A structured array: ``a["image_packed"]`` goes to faiss as it is; fixed-width fields."""
    dtype = [(name, "U8") if value.dtype.kind == "U" else (name, value.dtype, value.shape[1:])
             for name, value in columns.items()]
    table = np.empty(len(columns["row"]), dtype=dtype)
    for name, value in columns.items():
        table[name] = value
    with open(path, "wb") as f:
        np.save(f, table, allow_pickle=False)


def _parquet(columns: dict[str, np.ndarray], path: Path, result: dict) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("--to FILE.parquet needs pyarrow (pip install 'cfrh[parquet]'); or use --to FILE.npy") from None
    arrays = {}
    for name, value in columns.items():
        if name.endswith("_packed"):
            arrays[name] = pa.array([bytes(r) for r in value], type=pa.binary(value.shape[1]))
        elif name == "labels":
            arrays[name] = pa.array([np.flatnonzero(r).tolist() for r in value], type=pa.list_(pa.int32()))
        elif value.ndim == 2:
            arrays[name] = pa.FixedSizeListArray.from_arrays(pa.array(value.ravel()), value.shape[1])
        else:
            arrays[name] = pa.array(value)
    meta = {"cfrh.method": result["method"], "cfrh.dataset": result["dataset"], "cfrh.bits": str(result["bits"]),
            "cfrh.seed": str(result["seed"]), "cfrh.packing": "byte i//8, bit i%8 (faiss IndexBinary*)"}
    table = pa.table(arrays).replace_schema_metadata(meta)
    pq.write_table(table, str(path))
