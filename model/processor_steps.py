"""The CLIP image processor's steps (resize, crop, rescale and normalise) run one by one on uint8
batches: what ClipFeatureExtractor.preprocess does with a torchvision-backed processor.

Calling the processor itself splits a batch into single images again and runs its rescale and
normalisation as passes of their own over the channels-last view the resize returns; its steps on
a batch give identical values (tested in tests/test_fast_path.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from model.batch_math import affine_of, normalised_rgb, to_rgb
from model.images import PixelBlock
from model.packed import upright

_STEPS = ("resize", "center_crop", "rescale_and_normalize")


def _has_steps(processor: Any) -> bool:
    """A torchvision-backed processor: its steps can be run one by one."""
    return all(hasattr(processor, step) for step in _STEPS)


def resizes_by_steps(processor: Any) -> bool:
    """A processor whose steps can be run one by one, and that resizes."""
    return _has_steps(processor) and bool(processor.do_resize)


def transform(processor: Any, batch: torch.Tensor, bgr: list[bool]) -> torch.Tensor:
    """The processor's resize, crop and normalisation of an NCHW uint8 batch, on its device;
    `bgr` says which frames hold B, G, R."""
    if not _has_steps(processor):
        # Not a torchvision-backed processor: let it do everything itself.
        processed: torch.Tensor = processor(
            images=to_rgb(batch, bgr), return_tensors="pt", device=batch.device
        )["pixel_values"]
        return processed
    if processor.do_resize:
        batch = processor.resize(batch, size=processor.size, resample=processor.resample)
    return finish(processor, batch, bgr)


def steps_from_rows(processor: Any, block: PixelBlock) -> Callable[[torch.Tensor], torch.Tensor]:
    """The processor's steps for model.packed.packed_rows' frames of `block`'s shape (B, G, R,
    maybe bottom-up): torch operations of the rows alone, which model.traced can record."""

    def steps(stored: torch.Tensor) -> torch.Tensor:
        return transform(processor, upright(stored, block), [True] * stored.shape[0])

    return steps


def finish(processor: Any, batch: torch.Tensor, bgr: list[bool]) -> torch.Tensor:
    """The processor's crop, then its rescale and normalisation as one multiply-add a channel on
    a contiguous float copy, the channels put in RGB order by that copy: after resizing and
    cropping, on a few KB a frame instead of the whole frame (both treat channels alike)."""
    if processor.do_center_crop:
        batch = processor.center_crop(batch, processor.crop_size)
    scale, shift = affine_of(processor)
    return normalised_rgb(batch, bgr, scale, shift)


def resized_where_they_lie(processor: Any, arrays: list[np.ndarray]) -> tuple[torch.Tensor, list[bool]]:
    """On a CPU, each frame resized straight from where its file was read: no copy of the whole
    frame into a batch first (as many bytes as reading it). A BMP is resized with its rows and
    channels as stored; a bottom-up one is put upright after resizing, on a few KB (resizing is
    symmetric: flipping before or after gives the same bytes, tested), and the channels are
    swapped by the normalising copy. Returns the resized batch and which frames hold BGR."""
    resized, bgr = [], []
    for array in arrays:
        if array.dtype != np.uint8:
            raise TypeError(f"a picture must be uint8 (height, width, 3), not {array.dtype}")
        upside_down = array.strides[0] < 0
        stored = array[::-1] if upside_down else array
        reversed_channels = stored.strides[-1] < 0
        stored = stored[..., ::-1] if reversed_channels else stored
        if not stored.flags.writeable or min(stored.strides) < 0:
            # torch views only writable memory without a warning, and no negative strides.
            stored = np.ascontiguousarray(stored) if stored.flags.writeable else stored.copy()
        frame = torch.from_numpy(stored).permute(2, 0, 1).unsqueeze(0)  # HWC → NCHW, a view
        small = processor.resize(frame, size=processor.size, resample=processor.resample)
        resized.append(small.flip(2) if upside_down else small)
        bgr.append(reversed_channels)
    return torch.cat(resized), bgr
