"""Decoding image files into RGB pictures, with a clear reason when that is impossible.

The daemon and training share this function, so both see exactly the same pixels.
"""

from __future__ import annotations

import io
import logging
import warnings

from PIL import Image, UnidentifiedImageError

logger = logging.getLogger(__name__)


class UndecodableImage(Exception):
    """The bytes are not a picture we can read; the message is the reason stored for the frame."""


def decode_rgb(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode `data` into a fully loaded RGB image, refusing absurd sizes before allocating."""
    if not data:
        raise UndecodableImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Our own cap below replaces Pillow's bomb warning, which would only be logged.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width <= 0 or height <= 0:
                raise UndecodableImage(f"invalid dimensions {width}x{height}")
            if width * height > max_pixels:
                raise UndecodableImage(f"too large: {width}x{height} is over the cap of {max_pixels} pixels")
            image.load()
            # convert() copies even when nothing changes; a 24-bit BMP is already RGB.
            return image if image.mode == "RGB" else image.convert("RGB")
    except UndecodableImage:
        raise
    except UnidentifiedImageError:
        raise UndecodableImage("not a recognised image format") from None
    except Image.DecompressionBombError as error:
        raise UndecodableImage(f"too large: {error}".rstrip(".")) from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        # Pillow reports truncated or unsupported variants as OSError/ValueError/SyntaxError.
        raise UndecodableImage(f"cannot decode: {error}") from None
