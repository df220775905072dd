"""Generated inputs: a random-weight CLIP checkpoint and BMP frames, made here rather than downloaded.

The pretrained `openai/clip-vit-base-patch32` weights cannot always be fetched (offline sites, CI,
this library's own tests), so the weights are the one thing generated: model, image processor and
tokenizer are the real transformers classes written with `save_pretrained`, so whatever loads the
folder with `from_pretrained` runs as it does on the real checkpoint. `tiny` is small enough for two
CPU cores; `vit-b32` is the real ViT-B/32 architecture (the default `CLIPConfig`), for timings.
Both take 224-pixel input, so preprocessing (resize, crop, normalise) is exactly the real model's.

The frames are real BMP files: random pixels (`bmp_bytes`, `write_bmp`), distinct copies of one
picture made fast (`FrameMaker`), and a labelled folder whose two classes a random CLIP can tell
apart (`make_labelled_folder`). The test suite, the benchmarks and self-checks all use these.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

ClipSize = Literal["tiny", "vit-b32"]
CLIP_SIZES: tuple[ClipSize, ...] = ("tiny", "vit-b32")

# Small enough to run fast on two CPU cores, with ViT-B/32's input size and patch size.
TINY_VISION: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 224,
    "patch_size": 32,
}
TINY_TEXT: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}
# Per size: vision config, text config (empty: CLIPConfig's defaults, i.e. ViT-B/32), projection.
_SIZES: dict[ClipSize, tuple[dict[str, Any], dict[str, Any], int]] = {
    "tiny": (TINY_VISION, TINY_TEXT, 16),
    "vit-b32": ({}, {}, 512),
}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte-to-character table (the byte-level BPE alphabet)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes), strict=True))


def _write_tokenizer_files(folder: Path) -> dict[str, int]:
    """A vocabulary of single bytes (with and without CLIP's end-of-word marker) and no merges:
    every prompt tokenises, one character per token."""
    alphabet = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for symbol in alphabet + [symbol + "</w>" for symbol in alphabet]:
        vocab[symbol] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return vocab


def build_clip_checkpoint(folder: Path, *, size: ClipSize = "tiny", seed: int = 0) -> Path:
    """Save a random-weight CLIP (model, image processor, tokenizer) into `folder`; returns `folder`.

    The same `size` and `seed` give the same weights, so a checkpoint can be rebuilt anywhere.
    """
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    vision, text, projection_dim = _SIZES[size]
    folder.mkdir(parents=True, exist_ok=True)
    vocab = _write_tokenizer_files(folder)
    tokenizer = CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
    end_of_text = vocab["<|endoftext|>"]
    text_config = {
        **text,
        "vocab_size": len(vocab),
        "max_position_embeddings": 77,
        "eos_token_id": end_of_text,
        "pad_token_id": end_of_text,
        "bos_token_id": vocab["<|startoftext|>"],
    }
    config = CLIPConfig(text_config=text_config, vision_config=dict(vision), projection_dim=projection_dim)
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor().save_pretrained(folder)
    return folder


def random_image(*, width: int = 64, height: int = 48, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """Random pixels, the same for the same seed: RGB, or converted to `mode` (P or L: a palette)."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8), "RGB")
    return image if mode == "RGB" else image.convert(mode)


def bmp_bytes(*, width: int = 64, height: int = 48, mode: str = "RGB", seed: int = 0) -> bytes:
    """A whole BMP file with random pixels: 24-bit for RGB, 8-bit palette for P or L."""
    buffer = io.BytesIO()
    random_image(width=width, height=height, mode=mode, seed=seed).save(buffer, format="BMP")
    return buffer.getvalue()


def write_bmp(path: Path, *, width: int = 64, height: int = 48, mode: str = "RGB", seed: int = 0) -> Path:
    """`bmp_bytes` written to `path` (its folder made if missing) in one go: opened, written, closed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bmp_bytes(width=width, height=height, mode=mode, seed=seed))
    return path


class FrameMaker:
    """Distinct 24-bit BMP frames of one size, fast: one random picture, each copy stamped with
    its index in its first pixels, so no two frames have the same content (or frame hash)."""

    def __init__(self, *, width: int, height: int, seed: int = 1) -> None:
        self._template = bytearray(bmp_bytes(width=width, height=height, seed=seed))
        self._pixels_at = int.from_bytes(self._template[10:14], "little")

    def frame(self, index: int) -> bytes:
        data = self._template
        data[self._pixels_at : self._pixels_at + 8] = index.to_bytes(8, "little")
        return bytes(data)

    def write(self, path: Path, index: int) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.frame(index))  # opened, written, closed: as an exporter does
        return path


def write_striped_bmp(path: Path, *, vertical: bool, seed: int, width: int = 64, height: int = 48) -> Path:
    """A frame whose class shows: warmer horizontal stripes, or cooler vertical ones, under noise."""
    rng = np.random.default_rng(seed)
    period = int(rng.integers(4, 9))
    axis = np.arange(width if vertical else height)
    stripes = ((axis // period) % 2).astype(np.float32)
    band = np.broadcast_to(stripes[None, :] if vertical else stripes[:, None], (height, width))
    # Close colours under heavy noise: learnable, but not trivially.
    colour = np.array([110, 100, 150] if vertical else [150, 100, 110], dtype=np.float32)
    pixels = 50 + band[..., None] * colour + rng.normal(0, 70, size=(height, width, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(path, format="BMP")
    return path


def make_labelled_folder(root: Path, *, per_class: int, seed: int = 0) -> Path:
    """FEMALE/ (warm, horizontal) and MALE/ (cool, vertical): classes a tiny random CLIP can tell apart."""
    for index in range(per_class):
        write_striped_bmp(root / "FEMALE" / f"f{index:04d}.bmp", vertical=False, seed=seed * 100_000 + index)
        write_striped_bmp(
            root / "MALE" / f"m{index:04d}.bmp", vertical=True, seed=seed * 100_000 + 50_000 + index
        )
    return root
