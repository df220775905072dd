"""The arithmetic of preprocessing a batch on the model's device: chunking, channel order, and the
processor's rescale and normalisation as one multiply-add (see model.clip_features)."""

from __future__ import annotations

import functools
from typing import Any, TypeVar

import numpy as np
import torch

from model.device_wait import on_host
from model.packed import PackedBmp

_T = TypeVar("_T")

# Preprocessing converts a group of frames to float at their full size before resizing: at most
# this many bytes of them at once (about 290 frames of 640x480, two of 40 megapixels).
PREPROCESS_CHUNK_BYTES = 1024 * 1024 * 1024


def float_bytes(picture: np.ndarray | PackedBmp) -> int:
    """Bytes of one frame as float32 (resizing converts to float)."""
    if isinstance(picture, PackedBmp):
        return picture.block.rows * picture.block.width * 3 * 4
    return int(np.prod(picture.shape)) * 4


def chunked(group: list[_T], *, frame_bytes: int) -> list[list[_T]]:
    """Frames of one size in groups whose float copy (resizing converts to float) stays under
    PREPROCESS_CHUNK_BYTES: 32 frames of 40 megapixels would otherwise take 15 GB at once."""
    per_chunk = max(1, PREPROCESS_CHUNK_BYTES // max(frame_bytes, 1))
    return [group[start : start + per_chunk] for start in range(0, len(group), per_chunk)]


def affine_of(processor: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(scale, shift), per channel, with pixel * scale + shift equal to the processor's rescale
    (by rescale_factor) followed by its normalisation ((x - mean) / std)."""
    rescale = float(processor.rescale_factor) if processor.do_rescale else 1.0
    mean = processor.image_mean if processor.do_normalize else [0.0, 0.0, 0.0]
    std = processor.image_std if processor.do_normalize else [1.0, 1.0, 1.0]
    return _affine(rescale, tuple(mean), tuple(std))


@functools.lru_cache(maxsize=8)
def _affine(
    rescale: float, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # Asked for every chunk of every batch, always with the same processor's values: computed once.
    # In float32, as torch computed them when they were tensors: the same values to the last bit.
    scale = (torch.tensor(rescale) / torch.tensor(std, dtype=torch.float32)).tolist()
    shift = (-torch.tensor(mean, dtype=torch.float32) / torch.tensor(std, dtype=torch.float32)).tolist()
    return tuple(scale), tuple(shift)


def normalised_rgb(
    batch: torch.Tensor, bgr: list[bool], scale: tuple[float, ...], shift: tuple[float, ...]
) -> torch.Tensor:
    """The NCHW uint8 frames as a contiguous float32 copy times `scale` plus `shift` (per RGB
    channel), those marked BGR swapped to RGB by the copy itself (a flip first would be a pass of
    its own)."""
    if any(bgr) and not all(bgr):
        batch = to_rgb(batch, bgr)
    order = (2, 1, 0) if all(bgr) and bgr else (0, 1, 2)
    # The resize hands back a channels-last view: converting that to float channel by channel
    # gathers every third byte, 9 times slower on a CPU than one uint8 copy to NCHW first.
    batch = batch.contiguous()
    rgb = torch.empty(batch.shape, dtype=torch.float32, device=batch.device)
    for channel, source in enumerate(order):
        # Channel by channel, each multiply-add runs on a plane still in cache from its copy.
        rgb[:, channel].copy_(batch[:, source]).mul_(scale[channel]).add_(shift[channel])
    return rgb


def to_rgb(batch: torch.Tensor, bgr: list[bool]) -> torch.Tensor:
    """Swap the channels of the NCHW frames marked BGR."""
    if not any(bgr):
        return batch
    if all(bgr):
        return batch.flip(1)
    mask = torch.tensor(bgr, device=batch.device).view(-1, 1, 1, 1)
    return torch.where(mask, batch.flip(1), batch)


def pooled(output: object) -> torch.Tensor:
    """The projected embedding of a CLIP `get_*_features` call: transformers 5 returns a model
    output whose pooler_output it is; older releases returned the tensor itself."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output  # type: ignore[attr-defined]


def l2_normalised(features: torch.Tensor) -> torch.Tensor:
    """L2-normalised rows in float32, where the features are."""
    features = features.float()
    normalised: torch.Tensor = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return normalised


def normalised_rows(features: torch.Tensor) -> np.ndarray:
    """L2-normalised rows as float32 numpy on the host (on a GPU, the wait for them counted by
    model.device_wait)."""
    return on_host(l2_normalised(features))
