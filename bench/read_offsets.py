"""The kernel's copy of a frame's file into memory, by where that memory starts within a page.

    .venv/bin/python bench/read_offsets.py [--width 640 --height 480] [--reads 2000] [--repeats 5]
                                           [--json FILE]

On a CPU the daemon reads each frame into memory of its own (watcher.pipeline.decoding). A block
that large, when malloc maps it on its own (over its mmap threshold: 128 KiB at first, rising as
such blocks are freed, at most 32 MiB, so always for a frame over 32 MiB), starts 16 bytes past a
page's start, and on AMD Zen 3 the `rep movsb` the kernel copies with runs several times slower
when the destination starts 1 to 31 bytes past a page (the source, the page cache, starts on
one). So this reads one frame's file (cached) into memory starting 0, 8, 16, 24, 32 and 64 bytes
past a page, into a fresh `np.empty` each time (as the daemon did) and into the daemon's own
`page_aligned_memory`, and prints the CPU ms a read (the median of `--repeats` runs of `--reads`
reads each) and the ratio to reading into `np.empty`, measured in the same run: the baseline.
The figures depend on the CPU and on malloc's state: measure, never assume. Below 32 MiB malloc
serves every `np.empty` after the first from memory freed by the one before (not mapped, not 16
bytes past a page: here a 640x480 frame 1056 bytes past one, read as fast as page_aligned_memory), so
the baseline is the slow case only for frames over 32 MiB (`--width 4000 --height 3000`). The
`page + N` ways read into one block, its pages touched once; `np.empty` and page_aligned_memory
take memory afresh, over 32 MiB with its page faults: compare the ways of each kind among
themselves (4000x3000 on an AMD EPYC Zen 3: page + 0 3.8 ms, page_aligned_memory 6.9).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from harness import write_json

from model.synthetic import bmp_bytes
from watcher.pipeline.decoding import page_aligned_memory

OFFSETS = (0, 8, 16, 24, 32, 64)
_PAGE = 4096


def _at_offset(size: int, offset: int) -> Callable[[], memoryview]:
    """Memory for `size` bytes starting `offset` bytes past a page, the same block every read."""
    block = np.empty(size + 2 * _PAGE, dtype=np.uint8)
    start = -block.ctypes.data % _PAGE + offset
    view = block[start : start + size].data
    return lambda: view


def _fresh_empty(size: int) -> Callable[[], memoryview]:
    return lambda: np.empty(size, dtype=np.uint8).data


def _ms_a_read(path: Path, memory: Callable[[], memoryview], *, reads: int) -> float:
    """CPU ms of one open, read into `memory()` and close of `path`, as the daemon reads a frame."""
    size = path.stat().st_size + 1  # the daemon asks for one byte more (a growing file is refused)
    started = time.process_time()
    for _ in range(reads):
        descriptor = os.open(path, os.O_RDONLY)
        with open(descriptor, "rb", buffering=0) as handle:
            into = memory()
            if handle.readinto(into[:size]) != size - 1:
                raise RuntimeError(f"{path} was not read whole")
    return (time.process_time() - started) * 1000 / reads


def measure(path: Path, *, reads: int, repeats: int) -> dict[str, list[float]]:
    size = path.stat().st_size + 1
    ways: dict[str, Callable[[], memoryview]] = {"np.empty": _fresh_empty(size)}
    ways |= {f"page + {offset}": _at_offset(size, offset) for offset in OFFSETS}
    ways["page_aligned_memory"] = lambda: page_aligned_memory(size)
    runs: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeats):
        for name, memory in ways.items():  # in turn, so a slower minute of the VM hits every way
            runs[name].append(_ms_a_read(path, memory, reads=reads))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "out" / "read_offsets.json")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "frame.bmp"
        path.write_bytes(bmp_bytes(width=options.width, height=options.height, seed=1))
        runs = measure(path, reads=options.reads, repeats=options.repeats)
    medians = {name: statistics.median(values) for name, values in runs.items()}
    baseline = medians["np.empty"]
    print(f"reading a {options.width}x{options.height} BMP ({path.name}, cached), CPU ms a read:")
    for name, median in medians.items():
        spread = ", ".join(f"{value:.3f}" for value in runs[name])
        print(f"  {name:20s} {median:.3f} ms (runs {spread}); ÷ np.empty {median / baseline:.2f}")
    write_json(
        options.json, {"width": options.width, "height": options.height, "runs": runs, "medians": medians}
    )


if __name__ == "__main__":
    main()
