"""The one distance step every Hamming kernel is built on: XOR + ``popcount`` over uint64 words
(``cfrh_train.kernels`` ranks for the metrics, ``cfrh_search.topk`` keeps the k nearest)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(inline="always")
def popcount(x):
    """Set bits of a uint64 (the SWAR form; LLVM turns it into the popcnt instruction)."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)
