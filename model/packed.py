"""Frames that stay as their files' bytes until they reach the model's device.

A plain 24-bit BMP read into a shared buffer (see watcher.pipeline.arenas) needs no decoding on
the host at all: its pixel rows are copied to the device as stored, one contiguous copy a stretch
of frames straight out of that buffer (pinned, so the copies are asynchronous on CUDA), and the
device puts the rows upright. A batch on a GPU gathers its frames into device memory of its own
first (`gathered_on`), so that its buffer goes back to be read into while the model runs. Each
torch operation called from Python waits for the GIL after it (see model.traced): a batch crosses
in a handful of them, not one or more a frame. The
channels stay B, G, R until after resizing and cropping (see model.processor_steps.finish), where
swapping them costs a few KB instead of the whole frame.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import torch

from model.images import PixelBlock

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Frames whose span in their buffer is at most this many times their own bytes are copied to the
# device as that one span (a batch's frames fill its arena but for the ends of the workers' shares).
SPAN_SLACK = 1.5
# Frames this close together in a buffer are gathered as one copy, the bytes between them
# included: in a file worker's share of an arena, the next file's header and the alignment.
GATHER_GAP = 64 * 1024

# Each batch thread's CUDA stream (see thread_stream).
_streams = threading.local()


@dataclass(frozen=True)
class PackedBmp:
    """A BMP's pixel block inside `buffer` (a 1-D uint8 tensor: shared memory, or the device's once
    gathered)."""

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


def packed_rows(frames: list[PackedBmp], device: torch.device) -> torch.Tensor:
    """Frames of one shape_key as their stored rows, an (n, rows, row_bytes) uint8 tensor on
    `device`: padding and all, bottom-up ones still bottom-up.

    Frames evenly spaced in one buffer already on `device` (as gathered_on leaves a batch) are a
    view of it: nothing copied. Frames that lie close together in one buffer (a batch's arena) go to
    the device as one copy of the span they cover, then are cut out there in one operation; others
    get one copy each. Each torch operation called from Python waits for the GIL after it (see
    model.traced), so the common cases take a handful, not one a frame. On CUDA the copies are
    queued on the current stream without waiting, so the caller must not reuse the buffer before
    that stream has finished (embedding synchronises it).
    """
    first, buffer = frames[0].block, frames[0].buffer
    shape = (len(frames), first.rows, first.row_bytes)
    if all(frame.buffer is buffer for frame in frames):
        offsets = [frame.block.offset for frame in frames]
        step = _even_step(offsets, first.nbytes)
        fits = buffer.stride() == (1,) and offsets[-1] + first.nbytes <= buffer.numel()
        if step is not None and fits and _already_on(buffer, device):
            return buffer.as_strided(shape, (step, first.row_bytes, 1), buffer.storage_offset() + offsets[0])
        covered = _close_span(frames)
        if covered is not None:
            start, end = covered
            span = buffer[start:end].to(device, non_blocking=device.type == "cuda")
            return _cut_out(span, [offset - start for offset in offsets], first.nbytes).view(shape)
    stored = torch.empty(shape, dtype=torch.uint8, device=device)
    for slot, frame in zip(stored, frames, strict=True):
        block = frame.block
        rows = frame.buffer[block.offset : block.offset + block.nbytes].view(block.rows, block.row_bytes)
        slot.copy_(rows, non_blocking=device.type == "cuda")
    return stored


def _even_step(offsets: list[int], nbytes: int) -> int | None:
    """The distance between consecutive offsets when they are all the same and leave room for
    `nbytes` (frames in order, none overlapping); None otherwise."""
    if len(offsets) == 1:
        return nbytes
    step = offsets[1] - offsets[0]
    if step < nbytes or any(offset != offsets[0] + index * step for index, offset in enumerate(offsets)):
        return None
    return step


def _close_span(frames: list[PackedBmp]) -> tuple[int, int] | None:
    """(start, end) of the bytes that frames of one buffer cover, when that is at most SPAN_SLACK
    times their own bytes (a full batch's arena); None when they lie too far apart."""
    start = min(frame.block.offset for frame in frames)
    end = max(frame.block.offset + frame.block.nbytes for frame in frames)
    return (start, end) if end - start <= SPAN_SLACK * sum(frame.block.nbytes for frame in frames) else None


def _already_on(tensor: torch.Tensor, device: torch.device) -> bool:
    return tensor.device.type == device.type and device.index in (None, tensor.device.index)


def _cut_out(span: torch.Tensor, offsets: list[int], nbytes: int) -> torch.Tensor:
    """The `nbytes` from each of `offsets` in the 1-D `span`, as an (n, nbytes) tensor on its
    device: every window of the span at the offsets' common divisor is a view (unfold), and one
    index_select copies those wanted (a view of the span when every offset is 0)."""
    unit = math.gcd(*offsets)
    if unit == 0:  # every offset is 0: one frame, or the same one again
        return span[:nbytes].expand(len(offsets), nbytes)
    index = torch.tensor([offset // unit for offset in offsets])
    if span.device.type == "cuda":
        # From pinned memory the index's copy is queued behind the span's, not waited for.
        index = index.pin_memory().to(span.device, non_blocking=True)
    return span.unfold(0, nbytes, unit).index_select(0, index)


def upright(stored: torch.Tensor, block: PixelBlock) -> torch.Tensor:
    """packed_rows' (n, rows, row_bytes) as (n, 3, height, width) pixels, rows upright, channels
    still B, G, R: views but for a bottom-up frame's flip, one pass on the device (the host never
    touches the pixels). Torch operations of `stored` alone (its batch size read from it), so that
    model.traced can record them for every batch of the shape."""
    pixels = stored[:, :, : block.width * 3].reshape(stored.shape[0], block.rows, block.width, 3)
    if block.bottom_up:
        pixels = pixels.flip(1)
    return pixels.permute(0, 3, 1, 2)  # NHWC → NCHW, a view


@dataclass
class _Stretch:
    """Bytes of a buffer copied as one: `buffer[start:end]`."""

    buffer: torch.Tensor
    start: int
    end: int


def gathered_on(frames: list[PackedBmp], device: torch.device) -> list[PackedBmp]:
    """The same frames in buffers of their own on `device` (a copy even on the CPU), so that the
    buffer they lie in can be reused at once.

    Frames that lie close together in one buffer (a full batch's arena) cross as one copy of the
    span they cover; each shape's frames are then cut out of it on the device, evenly spaced in a
    buffer of their own, which packed_rows takes as a view. Otherwise frames that follow one
    another in a buffer (a file worker's share of an arena) are copied as one stretch: one copy a
    worker, not one a frame. On CUDA the copies are queued on the current stream; the old buffer
    may be reused once that stream has done them.
    """
    buffer = frames[0].buffer
    covered = _close_span(frames) if all(frame.buffer is buffer for frame in frames) else None
    if covered is None:
        return _by_stretches(frames, device)
    start, end = covered
    span = torch.empty(end - start, dtype=torch.uint8, device=device)
    span.copy_(buffer[start:end], non_blocking=device.type == "cuda")
    return _evenly_spaced(span, frames, start)


def _evenly_spaced(span: torch.Tensor, frames: list[PackedBmp], start: int) -> list[PackedBmp]:
    """`frames` (lying in a buffer from `start`, copied as `span`) cut out of the span, each
    shape's in order in a buffer of its own."""
    by_shape: dict[tuple[int, int, int, bool], list[int]] = {}
    for index, frame in enumerate(frames):
        by_shape.setdefault(frame.shape_key, []).append(index)
    moved: list[PackedBmp] = list(frames)
    for indices in by_shape.values():
        nbytes = frames[indices[0]].block.nbytes
        cut = _cut_out(span, [frames[index].block.offset - start for index in indices], nbytes).reshape(-1)
        if cut.untyped_storage().data_ptr() == span.untyped_storage().data_ptr():
            cut = cut.clone()  # a view of the span would keep all of it for one frame's bytes
        for slot, index in enumerate(indices):
            block = frames[index].block
            moved[index] = PackedBmp(cut, block.moved(slot * nbytes - block.offset))
    return moved


def _by_stretches(frames: list[PackedBmp], device: torch.device) -> list[PackedBmp]:
    stretches: list[_Stretch] = []
    stretch_of = [0] * len(frames)  # each frame's stretch, by the frame's index
    for index in sorted(range(len(frames)), key=lambda at: (id(frames[at].buffer), frames[at].block.offset)):
        buffer, block = frames[index].buffer, frames[index].block
        last = stretches[-1] if stretches else None
        if last is not None and last.buffer is buffer and block.offset - last.end <= GATHER_GAP:
            last.end = max(last.end, block.offset + block.nbytes)
        else:
            stretches.append(_Stretch(buffer, block.offset, block.offset + block.nbytes))
        stretch_of[index] = len(stretches) - 1
    gathered = torch.empty(sum(part.end - part.start for part in stretches), dtype=torch.uint8, device=device)
    moved_by, cursor = [], 0  # how far each stretch's frames move
    for part in stretches:
        size = part.end - part.start
        gathered[cursor : cursor + size].copy_(
            part.buffer[part.start : part.end], non_blocking=device.type == "cuda"
        )
        moved_by.append(cursor - part.start)
        cursor += size
    return [
        PackedBmp(gathered, frame.block.moved(moved_by[stretch_of[index]]))
        for index, frame in enumerate(frames)
    ]


def thread_stream(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """On CUDA, the calling thread's own stream: batches on several threads (see
    watcher.pipeline.lanes) then overlap one's copies to the GPU with another's compute."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    streams: dict[torch.device, torch.cuda.Stream] | None = getattr(_streams, "by_device", None)
    if streams is None:
        streams = _streams.by_device = {}
    stream = streams.get(device)
    if stream is None:
        stream = streams[device] = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]  # torch: unannotated
    return torch.cuda.stream(stream)


def pin_host_memory(buffer: torch.Tensor, device: torch.device) -> bool:
    """Page-lock a host buffer for asynchronous copies to `device`; False when that is impossible
    (a CPU device, or a CUDA build that refuses), which only makes the copies synchronous."""
    if device.type != "cuda":
        return False
    register = torch.cuda.cudart().cudaHostRegister  # type: ignore[no-untyped-call]  # torch: unannotated
    error = _on_a_thread_of_its_own(device, lambda: register(buffer.data_ptr(), buffer.numel(), 0))
    if int(error) != 0:
        logger.warning("cannot pin a %d-byte frame buffer (CUDA error %s)", buffer.numel(), error)
        return False
    return True


def unpin_host_memory(buffer: torch.Tensor, device: torch.device) -> None:
    unregister = torch.cuda.cudart().cudaHostUnregister  # type: ignore[no-untyped-call]  # torch: unannotated
    _on_a_thread_of_its_own(device, lambda: unregister(buffer.data_ptr()))


def _on_a_thread_of_its_own(device: torch.device, call: Callable[[], T]) -> T:
    """`call` (a CUDA runtime call) on a short-lived thread, `device` current there. A call that
    fails leaves its error as its thread's "last error", which torch's check after that thread's
    next kernel launch would raise as the kernel's own."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cuda-pinning") as pool:
        return pool.submit(_with_device, device, call).result()


def _with_device(device: torch.device, call: Callable[[], T]) -> T:
    with torch.cuda.device(device):
        return call()
