"""Every kind of BMP a camera system or Pillow writes decodes for training (decode_pixels) to the
pixels Pillow itself reads: the header checks that refuse a header describing no picture refuse no
real one (core and V2 to V5 headers, top-down rows, palettes, 16 and 32 bits, RLE, offset 0)."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from model.images import decode_pixels

PIL_MODES = ("1", "L", "P", "RGB", "RGBA")


def _pillow_bmp(mode: str, width: int, height: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGBA")
    image = image.convert("RGB").quantize(16) if mode == "P" else image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="BMP")
    return buffer.getvalue()


def _top_down(data: bytes) -> bytes:
    """The same picture with its rows stored top row first (a negative height)."""
    offset, _, width, height, _, bits = struct.unpack_from("<10xIIiiHH", data)
    stride = (width * bits + 31) // 32 * 4
    rows = [data[offset + row * stride : offset + (row + 1) * stride] for row in range(height)]
    flipped = bytearray(data[:offset] + b"".join(reversed(rows)))
    struct.pack_into("<i", flipped, 22, -height)
    return bytes(flipped)


def _header_of(size: int) -> Callable[[bytes], bytes]:
    """The same picture behind a BITMAPINFOHEADER widened to `size` bytes (V2 52, V3 56, OS/2 64,
    V4 108, V5 124), its pixel offset moved along."""

    def widened(data: bytes) -> bytes:
        offset, header_size = struct.unpack_from("<10xII", data)
        info = bytearray(data[14 : 14 + header_size] + bytes(size - header_size))
        struct.pack_into("<I", info, 0, size)
        out = bytearray(data[:14] + info + data[14 + header_size :])
        struct.pack_into("<II", out, 2, len(out), 0)
        struct.pack_into("<I", out, 10, offset + size - header_size)
        return bytes(out)

    return widened


def _offset_zero(data: bytes) -> bytes:
    """No pixel offset given: readers take the pixels from where the headers and palette end."""
    return data[:10] + bytes(4) + data[14:]


VARIANTS: dict[str, Callable[[bytes], bytes]] = {
    "as_written": lambda data: data,
    "top_down": _top_down,
    "offset_zero": _offset_zero,
    **{f"header_{size}": _header_of(size) for size in (52, 56, 64, 108, 124)},
}


def _pillow_rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@settings(max_examples=60, deadline=None)
@given(
    mode=st.sampled_from(PIL_MODES),
    variant=st.sampled_from(sorted(VARIANTS)),
    width=st.integers(1, 40),
    height=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_every_pillow_written_bmp_decodes_as_pillow_reads_it(
    mode: str, variant: str, width: int, height: int, seed: int
) -> None:
    if max(width, height) > 20 * min(width, height):
        width = height = max(width, height)  # thinner is refused on purpose (MAX_ASPECT_RATIO)
    data = VARIANTS[variant](_pillow_bmp(mode, width, height, seed))
    assert np.array_equal(decode_pixels(data, max_pixels=10**6), _pillow_rgb(data))


def _handmade(bits: int, compression: int, palette: bytes, pixels: bytes, *, header: int = 40) -> bytes:
    """A 4x2 BMP of these fields (core header: 12 bytes, 16-bit sides)."""
    if header == 12:
        info = struct.pack("<IHHHH", 12, 4, 2, 1, bits)
    else:
        info = struct.pack("<IiiHHIIiiII", 40, 4, 2, 1, bits, compression, len(pixels), 2835, 2835, 0, 0)
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + pixels


GRAYS = b"".join(bytes((level, level, level, 0)) for level in range(256))
GRAY_TRIPLES = b"".join(bytes((level, level, level)) for level in range(256))  # a core header's
MASKS_565 = struct.pack("<III", 0xF800, 0x07E0, 0x001F)
MASKS_888 = struct.pack("<III", 0xFF0000, 0xFF00, 0xFF)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_handmade(24, 0, b"", bytes(range(24)), header=12), id="core_header_24_bit"),
        pytest.param(
            _handmade(8, 0, GRAY_TRIPLES, bytes(range(8)), header=12),
            id="core_header_palette",
        ),
        pytest.param(_handmade(8, 1, GRAYS, bytes((4, 10, 0, 0, 2, 20, 2, 30, 0, 1))), id="rle8"),
        pytest.param(_handmade(4, 2, GRAYS[:64], bytes((4, 0x12, 0, 0, 4, 0x34, 0, 1))), id="rle4"),
        pytest.param(_handmade(16, 0, b"", struct.pack("<4H", 0x7C00, 0x03E0, 0x1F, 0) * 2), id="rgb555"),
        pytest.param(
            _handmade(16, 3, MASKS_565, struct.pack("<4H", 0xF800, 0x07E0, 0x1F, 0) * 2), id="bitfields_565"
        ),
        pytest.param(
            _handmade(32, 3, MASKS_888, struct.pack("<4I", 0xFF0000, 0xFF00, 0xFF, 0) * 2), id="bitfields_32"
        ),
    ],
)
def test_bmp_kinds_pillow_cannot_write_decode_as_pillow_reads_them(data: bytes) -> None:
    assert np.array_equal(decode_pixels(data, max_pixels=10**6), _pillow_rgb(data))
