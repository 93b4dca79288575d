"""MATLAB files in either layout users have: v5 (scipy.io) or v7.3 (HDF5, dimensions reversed).

Everything here speaks *MATLAB order*: a variable MATLAB shows as 20015×1386 has shape
(20015, 1386) whichever layout stored it. h5py sees v7.3 variables with their dimensions
reversed, so we reverse them back; v5 variables come from scipy already in MATLAB order.
v7.3 variables are read lazily (slices along one axis), so a 28 GB ``IAll`` is never loaded whole.

A v7.3 file written by another tool (h5py behind a MATLAB header) may or may not have reversed
its dimensions: such a variable has no ``MATLAB_class`` attribute, and ``expect_shape`` takes
the one reading that fits the expected shape, refusing when both (or neither) do. Sparse
matrices (common for tag matrices) are read in both layouts, as CSR.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.io
import scipy.sparse
from scipy.io.matlab import matfile_version

from cfrh.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class MatVar:
    """One variable of a .mat file, addressed in MATLAB order."""

    path: Path
    key: str
    format: str  # "v5" or "v7.3"
    shape: tuple[int, ...]
    _h5: h5py.Dataset | None = None
    _array: np.ndarray | scipy.sparse.csr_array | None = None
    by_matlab: bool = True  # False: a v7.3 variable written by another tool (order not known)
    reversed_: bool = True  # v7.3: h5py's dimensions are MATLAB's reversed (MATLAB's own writer)

    @property
    def dtype(self) -> np.dtype:
        return self._h5.dtype if self._h5 is not None else self._array.dtype

    @property
    def sparse(self) -> bool:
        return scipy.sparse.issparse(self._array)

    def read(self) -> np.ndarray | scipy.sparse.csr_array:
        """The whole variable (only for variables that fit in memory); MATLAB sparse as CSR."""
        if self._array is not None:
            return self._array
        data = self._h5[()]
        return np.ascontiguousarray(data.transpose() if self.reversed_ else data)

    def take(self, axis: int, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` along MATLAB axis ``axis``, in MATLAB order; reads only those rows."""
        if self._array is not None:
            index = [slice(None)] * len(self.shape)
            index[axis] = slice(start, stop)
            return self._array[tuple(index)]
        h5_axis = len(self.shape) - 1 - axis if self.reversed_ else axis
        index = [slice(None)] * len(self.shape)
        index[h5_axis] = slice(start, stop)
        block = self._h5[tuple(index)]
        return block.transpose() if self.reversed_ else block

    def as_stored(self) -> MatVar:
        """The other reading of a variable written by another tool: h5py's order as it is."""
        return MatVar(self.path, self.key, self.format, tuple(self._h5.shape), _h5=self._h5, by_matlab=False,
                      reversed_=False)

    def expect_shape(self, expected: tuple[int | None, ...], what: str = "") -> MatVar:
        """This variable in the reading that has the expected shape (None matches anything); else a
        DataError naming file, key, found and expected shape. A variable whose order is not known
        (see the module doc) is refused when both readings fit, since they cannot be told apart."""
        fits = lambda shape: len(expected) == len(shape) and all(e is None or e == s for e, s in zip(expected, shape))
        if not self.by_matlab and self._h5 is not None:
            other = self.as_stored()
            ours, theirs = fits(self.shape), fits(other.shape)
            if ours and theirs:
                show = lambda v: "×".join(map(str, v.shape))
                raise DataError(
                    f"{self.path}: variable '{self.key}' has no MATLAB_class attribute (written by h5py or another "
                    f"tool, not MATLAB), so its axis order is unknown: read as MATLAB would ({show(self)}) or as "
                    f"stored ({show(other)}) both fit {self._expected(expected)}; re-save it with MATLAB "
                    "(save -v7.3), or write it with h5py transposed and the MATLAB_class attribute set")
            if theirs and not ours:
                log.warning("%s:%s has no MATLAB_class; read in its stored order %s (the only one that fits)",
                            self.path.name, self.key, other.shape)
                return other
            if ours:
                return self
        elif fits(self.shape):
            return self
        shown = self._expected(expected)
        hint = ""
        if len(expected) == len(self.shape) and all(
            e is None or e == s for e, s in zip(expected, self.shape[::-1])
        ):
            hint = " (it looks transposed: save it as N×D, one row per sample)"
        raise DataError(
            f"{self.path}: variable '{self.key}' ({self.format}) has shape "
            f"{'×'.join(map(str, self.shape))}, expected {shown}{' ' + what if what else ''}{hint}"
        )

    @staticmethod
    def _expected(expected) -> str:
        return "×".join("*" if e is None else str(e) for e in expected)


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
            if isinstance(obj, h5py.Group) and "MATLAB_sparse" in obj.attrs:
                sparse = _h5_sparse(obj)
                return MatVar(self.path, key, self.format, sparse.shape, _array=sparse)
            if not isinstance(obj, h5py.Dataset):
                raise self._missing(key, expect)
            return MatVar(self.path, key, self.format, tuple(obj.shape[::-1]), _h5=obj,
                          by_matlab="MATLAB_class" in obj.attrs)
        node = self._v5_vars()
        for part in key.split("/"):
            if not isinstance(node, dict) or part not in node:
                raise self._missing(key, expect)
            node = node[part]
        if scipy.sparse.issparse(node):
            sparse = scipy.sparse.csr_array(node)
            return MatVar(self.path, key, self.format, sparse.shape, _array=sparse)
        array = np.atleast_1d(np.asarray(node))
        if array.dtype == object:
            raise DataError(f"{self.path}: variable '{key}' is a cell or struct, expected a numeric array")
        return MatVar(self.path, key, self.format, array.shape, _array=array)

    def _missing(self, key: str, expect: str) -> DataError:
        return DataError(
            f"{self.path}: no variable '{key}'{' (' + expect + ')' if expect else ''}; "
            f"the file ({self.format}) has: {', '.join(self.keys()) or 'nothing'}"
        )


def _h5_sparse(group: h5py.Group) -> scipy.sparse.csr_array:
    """A MATLAB v7.3 sparse matrix: CSC in MATLAB order (``data``, row indices ``ir``, column
    pointers ``jc``; ``MATLAB_sparse`` = the row count), returned as CSR."""
    rows = int(np.asarray(group.attrs["MATLAB_sparse"]).ravel()[0])
    jc = np.asarray(group["jc"][()], np.int64)
    ir = np.asarray(group["ir"][()], np.int64) if "ir" in group else np.zeros(0, np.int64)
    data = np.asarray(group["data"][()]) if "data" in group else np.ones(ir.size, np.uint8)
    if data.dtype.names:  # complex sparse: real and imag parts; keep the real part
        data = data[data.dtype.names[0]]
    csc = scipy.sparse.csc_array((data.ravel(), ir.ravel(), jc.ravel()), shape=(rows, jc.size - 1))
    return scipy.sparse.csr_array(csc)
