"""A stored frame as a picture for the browser: only from processed/ or failed/, never elsewhere.

`stored_path` comes from the database, which anyone who can write to it (or a bug) could point
anywhere: `/etc/shadow`, `../../`. The real path (symlinks followed) must lie inside one of the
two folders frames are moved to, or nothing is read.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

THUMBNAIL_DEFAULT = 256
THUMBNAIL_MAX = 1024


class FrameRefused(Exception):
    """The stored path lies outside processed/ and failed/."""


class FrameGone(Exception):
    """The frame file is no longer there (deleted, or on a share that is not mounted)."""


class FrameUnreadable(Exception):
    """The file is there but is no picture this app can show (a failed frame, often)."""


def frame_file(stored_path: str, *, roots: tuple[Path, ...]) -> Path:
    if not Path(stored_path).is_absolute() or "\0" in stored_path:
        raise FrameRefused(stored_path)  # the daemon stores absolute paths only; NUL is no path
    real = Path(os.path.realpath(stored_path))
    if not any(real.is_relative_to(root) for root in roots):
        raise FrameRefused(stored_path)
    if not real.is_file():
        raise FrameGone(stored_path)
    return real


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


def frame_roots(*folders: Path) -> tuple[Path, ...]:
    """The folders, as their real paths (a symlinked processed/ still matches its files)."""
    return tuple(Path(os.path.realpath(folder)) for folder in folders)
