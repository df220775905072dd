"""Small random-weight CLIP checkpoints, saved like a real one and loaded through `from_pretrained`.

The pretrained `openai/clip-vit-base-patch32` weights cannot be downloaded here, so this is the
one thing the tests (and benchmarks) fake: the weights. Model, image processor and tokenizer are
real transformers classes written with `save_pretrained`, so the daemon's loading code runs as
it does for users.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Small enough to run fast on two CPU cores; 224-pixel input like ViT-B/32, so preprocessing
# (resize, crop, normalise) is exactly the real model's.
TINY_VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=224,
    patch_size=32,
)
TINY_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP's reversible byte-to-character table (the byte-level BPE alphabet).
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
    # A vocabulary of single bytes (with and without CLIP's end-of-word marker) and no merges:
    # every prompt tokenises, just one character per token.
    alphabet = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for symbol in alphabet + [symbol + "</w>" for symbol in alphabet]:
        vocab[symbol] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return vocab


def build_clip_checkpoint(
    folder: Path,
    *,
    vision: dict[str, Any] | None = None,
    text: dict[str, Any] | None = None,
    projection_dim: int = 16,
    seed: int = 0,
) -> Path:
    """Save a random-weight CLIP (model, image processor, tokenizer) into `folder`.

    `vision=None` gives the tiny test model; `vision={}` gives the default CLIPConfig, which is
    the real ViT-B/32 architecture.
    """
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = _write_tokenizer_files(folder)
    tokenizer = CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
    end_of_text = vocab["<|endoftext|>"]
    text_config = dict(TINY_TEXT if text is None else text)
    text_config.update(
        vocab_size=len(vocab),
        max_position_embeddings=77,
        eos_token_id=end_of_text,
        pad_token_id=end_of_text,
        bos_token_id=vocab["<|startoftext|>"],
    )
    config = CLIPConfig(
        text_config=text_config,
        vision_config=dict(TINY_VISION if vision is None else vision),
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor().save_pretrained(folder)
    return folder
