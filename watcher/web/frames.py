"""A stored frame as a picture for the browser (its path checked by watcher.intake.stored_frames)."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from watcher.intake.stored_frames import FrameGone

THUMBNAIL_DEFAULT = 256
THUMBNAIL_MAX = 1024


class FrameUnreadable(Exception):
    """The file is there but is no picture this app can show (a failed frame, often)."""


def thumbnail_jpeg(path: Path, *, size: int, max_pixels: int) -> bytes:
    """The frame scaled to fit size × size, as JPEG."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:  # header checked before any pixel is decoded
                raise FrameUnreadable(f"{width}×{height} is over inbox.max_pixels")
            image.thumbnail((size, size))
            out = io.BytesIO()
            image.convert("RGB").save(out, format="JPEG", quality=85)
            return out.getvalue()
    except FileNotFoundError:
        raise FrameGone(str(path)) from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise FrameUnreadable(str(error)) from None
