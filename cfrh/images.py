"""Image files to 8-bit RGB, the way a person would see them: EXIF orientation applied, 16-bit
and floating-point pixels scaled (Pillow's ``convert("RGB")`` clips 16-bit to white and floats
to black), oversized images refused with their name instead of a decompression-bomb traceback.

Scaling rule (recorded in the cache's preprocessing attributes as ``DECODE``): integer images
wider than 8 bits are divided by their type's full range (16-bit: /257); floating-point images
in [0, 1] are multiplied by 255, others are stretched from their own minimum to maximum.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from cfrh.errors import DataError

DECODE = "exif-transpose; 16-bit /257; float [0,1] x255 else min-max; RGB"
MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # Pillow's guard (≈ 89 M pixels); twice that is refused


def to_rgb(image: Image.Image) -> Image.Image:
    """An opened image as 8-bit RGB, oriented by its EXIF tag."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        pixels = np.asarray(image)
        if image.mode == "F" or pixels.dtype.kind == "f":
            pixels = pixels.astype(np.float64)
            lo, hi = np.nanmin(pixels), np.nanmax(pixels)
            scaled = pixels * 255 if lo >= 0 and hi <= 1 else (pixels - lo) / max(hi - lo, 1e-12) * 255
        elif image.mode == "I" and pixels.max(initial=0) > 65535:
            lo, hi = pixels.min(), pixels.max()
            scaled = (pixels.astype(np.float64) - lo) / max(hi - lo, 1) * 255
        else:
            scaled = pixels.astype(np.float64) / 257
        grey = np.nan_to_num(np.clip(np.round(scaled), 0, 255)).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    return image.convert("RGB")


def open_rgb(path: str | Path, row: int | None = None, name: str | None = None) -> Image.Image:
    """Decode one image file; a bad file is a DataError naming it (``name``: what the user calls
    it, e.g. an upload's own name, not the temporary file) and its row, where given."""
    of_row = f" of row {row}" if row is not None else ""
    shown = name or path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return to_rgb(im)
    except Image.DecompressionBombError as exc:
        raise DataError(f"{shown}: image{of_row} too large to decode safely ({exc}); downscale it first") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{shown}: cannot decode image{of_row} ({str(exc).replace(str(path), str(shown))})") from exc
