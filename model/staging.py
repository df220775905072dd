"""Host buffers that a batch's decoded frames are copied into, once, on their way to the model's
device, kept per frame size and reused (pinned on CUDA, so the copy to the GPU is asynchronous)."""

from __future__ import annotations

import numpy as np
import torch

# Staging buffers kept for reuse: a few frame sizes, each at most this many bytes (32 frames of
# 640×480 are 29 MB; a 4K batch is allocated per use instead of held).
STAGING_CACHE_BYTES = 64 * 1024 * 1024
STAGING_CACHE_SHAPES = 4


def staged(
    arrays: list[np.ndarray], cache: dict[tuple[int, ...], torch.Tensor], *, pinned: bool
) -> tuple[torch.Tensor, list[bool]]:
    """The arrays copied into one (n, height, width, 3) uint8 tensor, the only copy they get,
    and which slots hold BGR.

    A BMP's pixel view reads its BGR bytes backwards to give RGB: copied that way it costs
    many times a plain copy, so its bytes are copied in stored order and the channels are
    swapped after resizing and cropping, on a few KB instead of the whole frame (resizing
    and cropping treat channels alike, so the result is the same).
    Buffers up to STAGING_CACHE_BYTES are kept in `cache` (one a thread) per frame size and reused:
    a fresh allocation costs page faults every batch (and pinning, on CUDA, costs more than the
    copy).
    """
    count, shape = len(arrays), arrays[0].shape
    buffer = cache.get(shape)
    if buffer is None or buffer.shape[0] < count:
        buffer = torch.empty((count, *shape), dtype=torch.uint8, pin_memory=pinned)
        if buffer.numel() <= STAGING_CACHE_BYTES:
            if len(cache) >= STAGING_CACHE_SHAPES:
                cache.pop(next(iter(cache)))  # the oldest frame size
            cache[shape] = buffer
    slots = buffer[:count].numpy()
    bgr = [array.strides[-1] < 0 for array in arrays]
    for slot, array, reversed_channels in zip(slots, arrays, bgr, strict=True):
        np.copyto(slot, array[..., ::-1] if reversed_channels else array)  # rows come upright
    return buffer[:count], bgr
