"""How many batches go through the model at once, and with how many CPU threads each.

On a GPU, `batch.gpu_lanes` batches are in flight (GPU_LANES, 3, unless set): one reading its
frames, one in the model (each batch thread on a CUDA stream of its own, so one's copies overlap
another's compute), one committing its rows and moving its files; more lanes overlap more of
them. They share nothing but the GPU: a partial batch never waits.

On a CPU the model's threads are the bottleneck. One batch on all cores suffers from anything
else that runs meanwhile: torch's OpenMP threads meet at a barrier after every operation, so a
core lent to file work for a moment stalls the whole pass. Several batches at once, one thread
each, have no barrier between them: file work slows them only by the CPU time it takes, and the
model is never idle while frames are read, hashed, moved and committed (`bench/watch_once.py`
measures both ways; the README's benchmark section has the figures).

A batch flushed before it is full (a quiet inbox, `batch.max_wait_ms`) is about latency, not
throughput: it gets every thread, alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from watcher.config.sections import BatchConfig

if TYPE_CHECKING:
    from model.clip_features import ClipFeatureExtractor

# More lanes hold more frames in memory (a batch each) for little gain beyond a few cores.
MAX_CPU_LANES = 4
# Reading, model, commit and moves: three batches keep each stage busy. One number, kept where
# the operator sets it (batch.gpu_lanes), for callers without a config.
GPU_LANES: int = BatchConfig.model_fields["gpu_lanes"].default


@dataclass(frozen=True)
class Lanes:
    count: int  # batches in the model at once
    threads_each: int  # CPU threads of each (all of the model's threads when count is 1)
    all_threads: int  # the model's CPU threads, for a batch that runs alone
    shares_cores: bool = False  # the batches split the CPU threads between them (on a CPU)


def plan_lanes(*, on_accelerator: bool, cpu_threads: int, gpu_lanes: int = GPU_LANES) -> Lanes:
    """The lanes for a model on a GPU (`gpu_lanes` batches in flight: `batch.gpu_lanes`) or on
    the CPU (`cpu_threads` split between them)."""
    threads = max(1, cpu_threads)
    if on_accelerator:
        return Lanes(count=max(2, gpu_lanes), threads_each=threads, all_threads=threads)
    count = min(threads, MAX_CPU_LANES)
    return Lanes(count=count, threads_each=threads // count, all_threads=threads, shares_cores=count > 1)


def lanes_for(extractor: ClipFeatureExtractor, *, gpu_lanes: int = GPU_LANES) -> Lanes:
    """The lanes of a loaded model: its device, and the CPU threads it was loaded with."""
    return plan_lanes(
        on_accelerator=extractor.runtime.device.type != "cpu",
        cpu_threads=extractor.cpu_threads,
        gpu_lanes=gpu_lanes,
    )
