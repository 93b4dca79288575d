"""What a retrieved row looks like: its image, from its file or from the dataset's image array
(``IAll``, read one row at a time), as a small RGB thumbnail; search pages and example figures
draw these."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image

from cfrh.errors import DataError
from cfrh.images import open_rgb
from cfrh.matfile import MatFile


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


def thumbnail(image: Image.Image | None, side: int = 96) -> Image.Image:
    """A square thumbnail (grey where there is no image)."""
    if image is None:
        return Image.new("RGB", (side, side), (200, 200, 200))
    image = image.copy()
    image.thumbnail((side, side))
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return canvas


def data_uri(image: Image.Image, quality: int = 85) -> str:
    """A JPEG ``data:`` URI, so a page carries its pictures inside it."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
