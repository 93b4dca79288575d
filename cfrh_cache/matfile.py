"""MATLAB files in either layout users have: v5 (scipy.io) or v7.3 (HDF5, dimensions reversed).

Everything here speaks *MATLAB order*: a variable MATLAB shows as 20015×1386 has shape
(20015, 1386) whichever layout stored it. h5py sees v7.3 variables with their dimensions
reversed, so we reverse them back; v5 variables come from scipy already in MATLAB order.
v7.3 variables are read lazily (slices along one axis), so a 28 GB ``IAll`` is never loaded whole.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from scipy.io.matlab import matfile_version

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Bad input data: the message names the file, the key and what was expected."""


@dataclass
class MatVar:
    """One variable of a .mat file, addressed in MATLAB order."""

    path: Path
    key: str
    format: str  # "v5" or "v7.3"
    shape: tuple[int, ...]
    _h5: h5py.Dataset | None = None
    _array: np.ndarray | None = None

    @property
    def dtype(self) -> np.dtype:
        return self._h5.dtype if self._h5 is not None else self._array.dtype

    def read(self) -> np.ndarray:
        """The whole variable (only for variables that fit in memory)."""
        if self._array is not None:
            return self._array
        return np.ascontiguousarray(self._h5[()].transpose())

    def take(self, axis: int, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` along MATLAB axis ``axis``, in MATLAB order; reads only those rows."""
        if self._array is not None:
            index = [slice(None)] * len(self.shape)
            index[axis] = slice(start, stop)
            return self._array[tuple(index)]
        h5_axis = len(self.shape) - 1 - axis
        index = [slice(None)] * len(self.shape)
        index[h5_axis] = slice(start, stop)
        return self._h5[tuple(index)].transpose()

    def expect_shape(self, expected: tuple[int | None, ...], what: str = "") -> None:
        """Raise a DataError naming file, key, found and expected shape; None matches anything."""
        ok = len(expected) == len(self.shape) and all(
            e is None or e == s for e, s in zip(expected, self.shape)
        )
        if ok:
            return
        shown = "×".join("*" if e is None else str(e) for e in expected)
        hint = ""
        if len(expected) == len(self.shape) and all(
            e is None or e == s for e, s in zip(expected, self.shape[::-1])
        ):
            hint = " (it looks transposed: save it as N×D, one row per sample)"
        raise DataError(
            f"{self.path}: variable '{self.key}' ({self.format}) has shape "
            f"{'×'.join(map(str, self.shape))}, expected {shown}{' ' + what if what else ''}{hint}"
        )


class MatFile:
    """An open .mat file of either layout. Use as a context manager to close HDF5 handles."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: file not found")
        try:
            major, _ = matfile_version(str(self.path))
        except Exception as exc:  # scipy raises several kinds for non-MATLAB files
            raise DataError(f"{self.path}: not a MATLAB .mat file ({exc})") from exc
        self._h5: h5py.File | None = None
        self._v5: dict | None = None
        if major == 2:
            self.format = "v7.3"
            self._h5 = h5py.File(self.path, "r")
        elif major == 1:
            self.format = "v5"
        else:
            raise DataError(f"{self.path}: MATLAB v4 files are not supported; re-save with -v7 or -v7.3")
        log.info("%s: MATLAB %s layout", self.path.name, self.format)

    def __enter__(self) -> MatFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def _v5_vars(self) -> dict:
        if self._v5 is None:
            self._v5 = scipy.io.loadmat(self.path, simplify_cells=True)
        return self._v5

    def keys(self) -> list[str]:
        if self._h5 is not None:
            names: list[str] = []
            self._h5.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
            return [n for n in names if not n.startswith("#")]
        return [k for k in self._v5_vars() if not k.startswith("__")]

    def var(self, key: str, *, expect: str = "") -> MatVar:
        """Variable ``key`` ("param/indexQuery" reaches into a struct). ``expect`` words the error."""
        if self._h5 is not None:
            obj = self._h5.get(key)
            if not isinstance(obj, h5py.Dataset):
                raise self._missing(key, expect)
            return MatVar(self.path, key, self.format, tuple(obj.shape[::-1]), _h5=obj)
        node = self._v5_vars()
        for part in key.split("/"):
            if not isinstance(node, dict) or part not in node:
                raise self._missing(key, expect)
            node = node[part]
        array = np.atleast_1d(np.asarray(node))
        if array.dtype == object:
            raise DataError(f"{self.path}: variable '{key}' is a cell or struct, expected a numeric array")
        return MatVar(self.path, key, self.format, array.shape, _array=array)

    def _missing(self, key: str, expect: str) -> DataError:
        return DataError(
            f"{self.path}: no variable '{key}'{' (' + expect + ')' if expect else ''}; "
            f"the file ({self.format}) has: {', '.join(self.keys()) or 'nothing'}"
        )


MAT73_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Jan  1 00:00:00 1970 HDF5 schema 1.00 ."


def write_mat73(path: str | Path, variables: dict[str, np.ndarray], compression: str | None = "gzip") -> None:
    """Write variables as MATLAB does with ``save -v7.3``: HDF5 behind a 512-byte header, dims reversed.

    Used by the synthetic demo data and the tests, so that the real v7.3 code path is exercised.
    A variable named "a/b" is written as field b of struct a.
    """
    path = Path(path)
    with h5py.File(path, "w", userblock_size=512) as f:
        for key, value in variables.items():
            value = np.asarray(value)
            data = value.transpose()
            # images (H×W×3×N in MATLAB) get one sample per chunk, as MATLAB's own v7.3 writer does
            chunks = (1, *data.shape[1:]) if value.ndim > 2 else (True if value.ndim == 2 else None)
            f.create_dataset(key, data=data, compression=compression if chunks else None, chunks=chunks)
            f[key].attrs["MATLAB_class"] = np.bytes_(_matlab_class(value.dtype))
    header = MAT73_HEADER.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as f:
        f.write(header.ljust(512, b"\x00"))


def _matlab_class(dtype: np.dtype) -> str:
    return {"f": "double" if dtype.itemsize == 8 else "single", "u": f"uint{dtype.itemsize * 8}",
            "i": f"int{dtype.itemsize * 8}", "b": "logical"}.get(dtype.kind, "double")


def write_mat5(path: str | Path, variables: dict[str, np.ndarray]) -> None:
    """Write a MATLAB v5 file (``save -v7`` without compression), for demos and tests."""
    scipy.io.savemat(path, variables, do_compression=True)
