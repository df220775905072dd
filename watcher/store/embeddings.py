"""CLIP features as stored in a row: float16, little-endian, with what produced them."""

from __future__ import annotations

import numpy as np


def embedding_model_id(clip_model: str, preprocessing_version: str, engine: str | None = None) -> str:
    """`<CLIP content> <preprocessing version> [<runtime>-<precision>]`. Rows name the engine that
    computed them (`onnxruntime-int8`, `torch-fp32`...); what a head needs, and `rescore` matches
    on, is the part before it (see embedding_models_matching)."""
    return f"{clip_model} {preprocessing_version}" + (f" {engine}" if engine else "")


def pack_embeddings(features: np.ndarray) -> list[bytes]:
    """Each row of `features` as a row stores it; the whole batch converted in one call (a
    conversion a row cost more than the bytes themselves)."""
    return [row.tobytes() for row in features.astype("<f2")]


def unpack_embeddings(blobs: list[bytes]) -> np.ndarray:
    return np.stack([np.frombuffer(blob, dtype="<f2") for blob in blobs]).astype(np.float32)
