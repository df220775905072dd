"""Frames that stay as their files' bytes until they reach the model's device.

A plain 24-bit BMP read into a shared buffer (see watcher.pipeline.arenas) needs no decoding on
the host at all: its pixel rows are copied to the device as stored, one contiguous copy a frame
straight out of that buffer (pinned, so the copies are asynchronous on CUDA), and the device puts
the rows upright. The channels stay B, G, R until after resizing and cropping (see
model.processor_steps.finish), where swapping them costs a few KB instead of the whole frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from model.images import PixelBlock

logger = logging.getLogger(__name__)

# Frames whose span in their buffer is at most this many times their own bytes are copied to the
# device as that one span (a batch's frames fill its arena but for the ends of the workers' shares).
SPAN_SLACK = 1.5


@dataclass(frozen=True)
class PackedBmp:
    """A BMP's pixel block inside `buffer` (a 1-D uint8 tensor over shared memory)."""

    buffer: torch.Tensor
    block: PixelBlock

    @property
    def shape(self) -> tuple[int, int, int]:
        """(height, width, 3), as the decoded picture's array."""
        return (self.block.rows, self.block.width, 3)

    @property
    def shape_key(self) -> tuple[int, int, int, bool]:
        """Frames with equal keys go through the device as one tensor."""
        block = self.block
        return (block.rows, block.width, block.row_bytes, block.bottom_up)


def packed_to_device(frames: list[PackedBmp], device: torch.device) -> torch.Tensor:
    """Frames of one shape_key as an (n, 3, height, width) uint8 tensor on `device`, rows upright,
    channels still B, G, R.

    Frames that lie close together in one buffer (a batch's arena) go to the device as one copy of
    the span they cover, then are cut out there; others get one copy each. On CUDA the copies are
    queued on the current stream without waiting, so the caller must not reuse the buffer before
    that stream has finished (embedding synchronises it).
    """
    first = frames[0].block
    non_blocking = device.type == "cuda"
    start = min(frame.block.offset for frame in frames)
    end = max(frame.block.offset + frame.block.nbytes for frame in frames)
    one_buffer = all(frame.buffer is frames[0].buffer for frame in frames)
    if one_buffer and end - start <= SPAN_SLACK * len(frames) * first.nbytes:
        span = frames[0].buffer[start:end].to(device, non_blocking=non_blocking)
        stored = torch.stack(
            [span[frame.block.offset - start : frame.block.offset - start + first.nbytes] for frame in frames]
        ).view(len(frames), first.rows, first.row_bytes)
    else:
        stored = torch.empty((len(frames), first.rows, first.row_bytes), dtype=torch.uint8, device=device)
        for slot, frame in zip(stored, frames, strict=True):
            block = frame.block
            rows = frame.buffer[block.offset : block.offset + block.nbytes].view(block.rows, block.row_bytes)
            slot.copy_(rows, non_blocking=non_blocking)
    pixels = stored[:, :, : first.width * 3].reshape(len(frames), first.rows, first.width, 3)
    if first.bottom_up:
        pixels = pixels.flip(1)  # one pass on the device; the host never touches the pixels
    return pixels.permute(0, 3, 1, 2)  # NHWC → NCHW, a view


def pin_host_memory(buffer: torch.Tensor, device: torch.device) -> bool:
    """Page-lock a host buffer for asynchronous copies to `device`; False when that is impossible
    (a CPU device, or a CUDA build that refuses), which only makes the copies synchronous."""
    if device.type != "cuda":
        return False
    error = torch.cuda.cudart().cudaHostRegister(buffer.data_ptr(), buffer.numel(), 0)  # type: ignore[no-untyped-call]  # torch: unannotated
    if int(error) != 0:
        logger.warning("cannot pin a %d-byte frame buffer (CUDA error %s)", buffer.numel(), error)
        return False
    return True


def unpin_host_memory(buffer: torch.Tensor) -> None:
    torch.cuda.cudart().cudaHostUnregister(buffer.data_ptr())  # type: ignore[no-untyped-call]  # torch: unannotated
