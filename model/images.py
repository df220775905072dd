"""Decoding image files into RGB pixels, with a clear reason when that is impossible.

The daemon and training share `decode_pixels`, so both see exactly the same pixels. The common
CCTV export, an uncompressed 24-bit BMP, is not decoded at all: its pixel rows are viewed in
place (bottom-up rows and BGR order are strides of the view), so the only copy is the one into
the model's batch. Everything else goes through Pillow, which gives the same values (tested).
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


class UndecodableImage(Exception):
    """The bytes are not a picture we can read; the message is the reason stored for the frame."""


# CLIP's processor scales the shortest side to 224 (336 for some models) before cropping: a frame
# of 40,000 x 1 pixels, a few KB on disk, would become 224 x 8,960,000 (gigabytes as floats). At
# most 20:1, a resized frame stays under 20 MB whatever its size on disk.
MAX_ASPECT_RATIO = 20
# A BMP may carry a few bytes after its pixels (padding, a trailing profile); more than this over
# what its header declares is not a frame (a sparse file, or one written over another).
DECLARED_SIZE_SLACK = 64 * 1024
# Enough of a file to know its declared size and dimensions: file header + BITMAPINFOHEADER.
HEADER_BYTES = 54

BMP_MAGIC = b"BM"
# 'BM', then the whole file's size as a little-endian uint32.
BMP_SIZE_FIELD = struct.Struct("<2sI")
# The smallest valid BMP: 14-byte file header + 12-byte core header.
MIN_BMP_SIZE = 26
# BITMAPFILEHEADER's pixel-data offset, then BITMAPINFOHEADER (or a later, larger version):
# header size, width, height, planes, bits per pixel, compression.
_BMP_LAYOUT = struct.Struct("<10xI I i i H H I")
_BI_RGB = 0


def decode_pixels(data: bytes | memoryview, *, max_pixels: int) -> np.ndarray:
    """(height, width, 3) uint8 RGB pixels of `data`; a view into `data` for plain 24-bit BMPs.
    A BMP whose header describes no picture is refused here too (check_bmp_header); the daemon
    checks a file's size, header and whole bytes first, as training's read_checked does, so that
    training and evaluation skip exactly the frames the daemon fails."""
    check_bmp_header(data, max_pixels=max_pixels)
    block = plain_bmp_block(data, max_pixels=max_pixels)
    if block is not None:
        return block.rgb_view(data)
    return np.asarray(decode_rgb(bytes(data), max_pixels=max_pixels))


@dataclass(frozen=True)
class PixelBlock:
    """Where an uncompressed 24-bit BMP keeps its pixels: `rows` rows of `row_bytes` bytes (B, G, R
    per pixel, padded to 4 bytes) from `offset`, bottom row first when `bottom_up`."""

    offset: int
    rows: int
    width: int
    row_bytes: int
    bottom_up: bool

    @property
    def nbytes(self) -> int:
        return self.rows * self.row_bytes

    def moved(self, by: int) -> PixelBlock:
        """The same block, `by` bytes further into a larger buffer."""
        return replace(self, offset=self.offset + by)

    def rgb_view(self, data: bytes | memoryview) -> np.ndarray:
        """The (height, width, 3) RGB pixels as a strided view of `data`: no copy."""
        stored = np.frombuffer(data, dtype=np.uint8, count=self.nbytes, offset=self.offset)
        bgr = stored.reshape(self.rows, self.row_bytes)[:, : self.width * 3].reshape(self.rows, self.width, 3)
        return bgr[::-1, :, ::-1] if self.bottom_up else bgr[:, :, ::-1]


def plain_bmp_block(data: bytes | memoryview, *, max_pixels: int) -> PixelBlock | None:
    """The pixel block of an uncompressed 24-bit BMP, or None for anything else."""
    if len(data) < _BMP_LAYOUT.size or bytes(data[:2]) != BMP_MAGIC:
        return None
    offset, header_size, width, height, planes, bits, compression = _BMP_LAYOUT.unpack_from(data)
    if header_size < 40 or planes != 1 or bits != 24 or compression != _BI_RGB or width <= 0 or height == 0:
        return None
    rows = abs(height)
    check_dimensions(width, rows, max_pixels=max_pixels)
    stride = (width * 3 + 3) // 4 * 4  # rows are padded to 4 bytes
    if offset < _BMP_LAYOUT.size or offset + stride * rows > len(data):
        return None  # short or odd: Pillow says what is wrong with it
    # Positive height: rows are stored bottom-up.
    return PixelBlock(offset=offset, rows=rows, width=width, row_bytes=stride, bottom_up=height > 0)


def check_dimensions(width: int, height: int, *, max_pixels: int) -> None:
    """Refuse, before any allocation, a picture too large to decode or too thin to resize."""
    if width * height > max_pixels:
        raise UndecodableImage(f"too large: {width}x{height} is over the cap of {max_pixels} pixels")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise UndecodableImage(
            f"too large: {width}x{height} is over the aspect ratio cap of {MAX_ASPECT_RATIO}:1 "
            "(resizing it for CLIP would take gigabytes)"
        )


def check_before_reading(head: bytes, file_size: int, *, max_pixels: int, max_file_bytes: int) -> None:
    """Refuse a file from its size and its first HEADER_BYTES alone, before reading the rest:
    over `max_file_bytes`, far larger than its BMP header declares, or of impossible dimensions."""
    is_bmp = len(head) >= MIN_BMP_SIZE and head[:2] == BMP_MAGIC
    declared = struct.unpack_from("<I", head, 2)[0] if is_bmp else 0
    if declared >= MIN_BMP_SIZE and file_size > declared + DECLARED_SIZE_SLACK:
        raise UndecodableImage(f"too large: {file_size} bytes on disk, its header declares {declared}")
    if file_size > max_file_bytes:
        raise UndecodableImage(f"too large: {file_size} bytes (inbox.max_file_bytes is {max_file_bytes})")
    if not is_bmp:
        return  # not a BMP (Pillow says what it is), or too short to tell: size alone decides
    sides = _bmp_sides(head)
    if sides is not None and sides[0] > 0 and sides[1] != 0:
        check_dimensions(sides[0], abs(sides[1]), max_pixels=max_pixels)


def incomplete_reason(data: bytes | memoryview) -> str | None:
    """Why the bytes of a frame are an incomplete BMP, or None when they are not known to be.

    Judged from the content alone, so a frame recovered after a crash fails with the same reason
    as one given up by the readiness timeout, and training skips what the daemon fails.
    """
    if not data:
        return "truncated: empty file (0 bytes)"
    if len(data) < BMP_SIZE_FIELD.size:
        return f"truncated: {len(data)} bytes, too short for a BMP header"
    magic, declared = BMP_SIZE_FIELD.unpack_from(data)
    if magic == BMP_MAGIC and declared >= MIN_BMP_SIZE and len(data) < declared:
        return f"truncated: {len(data)} of {declared} declared bytes"
    return None


def read_checked(path: Path, *, max_pixels: int, max_file_bytes: int) -> bytes:
    """The bytes of the file at `path`, refused with the daemon's reason wherever the daemon fails
    a frame for its bytes alone, in its order (watcher.pipeline.decoding.read_and_decode): from
    its size and first bytes before the rest is read (check_before_reading: over
    `max_file_bytes`, far larger than its BMP header declares, of impossible dimensions), then
    whole (check_complete_frame). Training and evaluation read labelled images with it."""
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(HEADER_BYTES)
        check_before_reading(head, size, max_pixels=max_pixels, max_file_bytes=max_file_bytes)
        handle.seek(0)
        data = handle.read(max_file_bytes + 1)  # one byte more than allowed: a growing file not slurped
    if len(data) > max_file_bytes:
        raise UndecodableImage(f"too large: over {max_file_bytes} bytes (inbox.max_file_bytes)")
    check_complete_frame(data, max_pixels=max_pixels)
    return data


def check_complete_frame(data: bytes | memoryview, *, max_pixels: int) -> None:
    """Refuse a file's whole bytes as the daemon does once it has read them: an incomplete BMP
    (incomplete_reason: its writer had not finished), then a header that describes no picture
    (check_bmp_header). Training and evaluation call it too, so they skip what the daemon fails."""
    truncated = incomplete_reason(data)
    if truncated is not None:
        raise UndecodableImage(truncated)
    check_bmp_header(data, max_pixels=max_pixels)


def check_bmp_header(data: bytes | memoryview, *, max_pixels: int) -> None:
    """Refuse a complete BMP whose header describes no picture: sides of zero or less, too many
    pixels, or pixels said to start inside its headers or past its end (Pillow reads those as a
    complete picture shifted over its headers, or as "truncated"). After the read and the hash, so
    that the frame's row keeps its sha256 as any other undecodable frame's does."""
    if len(data) < MIN_BMP_SIZE or bytes(data[:2]) != BMP_MAGIC:
        return
    sides = _bmp_sides(data)
    if sides is None:
        return  # Pillow names the header it does not know
    width, height = sides
    offset, header_size = struct.unpack_from("<II", data, 10)
    end = len(data)
    if width <= 0 or height == 0:
        raise UndecodableImage(f"invalid dimensions {width}x{height} in its BMP header")
    check_dimensions(width, abs(height), max_pixels=max_pixels)
    # 0 is no offset given: Pillow reads the pixels from where the headers end.
    if 0 < offset < 14 + header_size:
        raise UndecodableImage(
            f"invalid pixel data offset {offset}: inside its {14 + header_size} bytes of BMP headers"
        )
    if offset >= end:
        raise UndecodableImage(f"invalid pixel data offset {offset}: its {end} bytes end before any pixel")


def _bmp_sides(head: bytes | memoryview) -> tuple[int, int] | None:
    """Width and height from the first MIN_BMP_SIZE bytes of a BMP, by its header's layout; None for a
    header size neither layout has."""
    (header_size,) = struct.unpack_from("<I", head, 14)
    if header_size == 12:  # BITMAPCOREHEADER: unsigned 16-bit dimensions
        return struct.unpack_from("<HH", head, 18)
    if header_size >= 40:
        return struct.unpack_from("<ii", head, 18)
    return None


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
            check_dimensions(width, height, max_pixels=max_pixels)
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


def as_uint8_array(picture: Image.Image | np.ndarray) -> np.ndarray:
    """The (height, width, 3) uint8 RGB array of a picture, without a copy when it already is one."""
    if isinstance(picture, np.ndarray):
        return picture
    return np.asarray(picture if picture.mode == "RGB" else picture.convert("RGB"))
