"""What a retrieved row looks like, as a small RGB thumbnail (its image comes from
``cfrh_cache.store.row_image``); search pages and example figures draw these."""

from __future__ import annotations

import base64
import io

from PIL import Image


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
