"""Binary codes, one convention everywhere: sign(0) = +1, ±1 as int8, bits packed little-endian
into uint64 words (bit j of a code is bit j % 64 of word j // 64)."""

from __future__ import annotations

import numpy as np


def binarize(codes) -> np.ndarray:
    """Real-valued (or ±1) codes → int8 ±1, with sign(0) = +1."""
    return np.where(np.asarray(codes) >= 0, 1, -1).astype(np.int8)


def to_bits(codes) -> np.ndarray:
    """Real or ±1 codes (n, K) → 0/1 uint8 bits, 1 where the code is ≥ 0."""
    return (np.asarray(codes) >= 0).astype(np.uint8)


def pack_words(bits: np.ndarray) -> np.ndarray:
    """0/1 bits (n, K) → uint64 words (n, ceil(K/64)), little-endian within each word."""
    bits = np.atleast_2d(bits)
    n, k = bits.shape
    padded = np.zeros((n, -(-k // 64) * 64), np.uint8)
    padded[:, :k] = bits
    return np.packbits(padded, axis=1, bitorder="little").view("<u8").reshape(n, -1)


def pack_codes(codes) -> np.ndarray:
    """±1 (or real, sign(0) = +1) codes (n, K) → uint64 words."""
    return pack_words(to_bits(codes))
