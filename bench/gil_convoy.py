"""The model stage beside a thread running Python: op by op from Python, and traced (model.traced).

    .venv/bin/python bench/gil_convoy.py [--model tiny|vit-b32] [--device auto] [--batch 32]
                                         [--repeats 5] [--calls 5] [--json FILE]

Run from Python, each torch operation gives the GIL back and must take it again after; while
another thread of the process runs Python, each of those takes can wait up to the interpreter's
switch interval (5 ms). In the daemon the loop, the claims, the rows and the moves are that other
Python; on a GPU, where a batch's whole forward is a few milliseconds of kernel launches, those
waits are what the model stage is made of. This measures it directly, for two stages: the image
tower alone (`embed_pixels` of a batch of random pixels) and the whole model stage as a lane runs
it on arena frames already on the device (`image_features`: the preprocessing of 640×480 BMPs'
rows, then the tower); `--calls` passes of one batch, alone and then with one thread beside them
running a pure-Python loop (the worst case: it never waits), op by op (the baseline,
`model.traced = false`) and traced, both at Python's default switch interval (5 ms), and traced at
a shorter one (`--switch-interval-ms`, 0.5 by default: a value for `batch.gil_switch_interval_ms`),
rounds alternating between the three; medians of `--repeats` rounds. On a CPU the model gets one
thread, the busy thread a core of its own where there are two. Prints each figure with the
ratios (beside ÷ alone: the convoy's cost; traced ÷ op by op beside: what the traces save there;
the shorter switch interval ÷ Python's, traced, beside) and writes them as JSON.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import MODELS, REPO, build_model, busy_python, write_json

sys.path.insert(0, str(REPO))

# Python's own switch interval (sys.setswitchinterval's default), the one the op-by-op and traced
# baselines run at.
PYTHON_SWITCH_INTERVAL_S = 0.005

if TYPE_CHECKING:
    from model.clip_features import ClipFeatureExtractor


def _time_calls(
    run: Callable[[], object], calls: int, *, beside_busy: bool, switch_interval_s: float
) -> float:
    """Milliseconds a call of `run`, the mean of `calls`, optionally beside a busy Python thread,
    at the given switch interval (sys.setswitchinterval)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(switch_interval_s)
    try:
        with busy_python(1 if beside_busy else 0):
            started = time.perf_counter()
            for _ in range(calls):
                run()
            return (time.perf_counter() - started) / calls * 1000
    finally:
        sys.setswitchinterval(before)


def _arena_frames(count: int) -> list[Any]:
    """`count` 640×480 BMPs one after another in one host buffer, as a file worker reads its share
    of an arena (model.packed.PackedBmp)."""
    import torch

    from model.images import plain_bmp_block
    from model.packed import PackedBmp
    from model.synthetic import bmp_bytes

    data = bmp_bytes(width=640, height=480, seed=1)
    stride = -(-len(data) // 4096) * 4096
    buffer = torch.zeros(count * stride, dtype=torch.uint8)
    block = plain_bmp_block(data, max_pixels=10**8)
    assert block is not None
    for index in range(count):
        buffer[index * stride : index * stride + len(data)] = torch.frombuffer(
            bytearray(data), dtype=torch.uint8
        )
    return [PackedBmp(buffer, block.moved(index * stride)) for index in range(count)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="tiny")
    parser.add_argument("--device", default="auto", help="as model.device: auto, cpu, cuda, cuda:N")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument(
        "--switch-interval-ms",
        type=float,
        default=0.5,
        help="the shorter switch interval to compare with Python's 5 ms (as batch.gil_switch_interval_ms)",
    )
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "out" / "gil_convoy.json")
    args = parser.parse_args()

    import torch
    from pydantic import ValidationError

    from model.clip_features import ClipFeatureExtractor
    from model.runtime import resolve_runtime
    from watcher.config.sections import BatchConfig

    try:  # checked as the config's key is
        short_ms = BatchConfig(gil_switch_interval_ms=args.switch_interval_ms).gil_switch_interval_ms
    except ValidationError:
        parser.error("--switch-interval-ms: from 0.01 to 100, as batch.gil_switch_interval_ms")

    # fp16 on a GPU, fp32 on a CPU: the precisions the trace runs in (bf16 autocast is not traced).
    runtime = resolve_runtime(device=args.device, precision="fp32" if args.device == "cpu" else "auto")
    if runtime.device.type == "cpu":
        runtime = resolve_runtime(device="cpu", precision="fp32")
        torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="cctv-convoy-") as scratch:
        clip = build_model(Path(scratch) / "clip", args.model)
        op_by_op = ClipFeatureExtractor(str(clip), runtime=runtime)
        traced = ClipFeatureExtractor(str(clip), runtime=runtime)
    if not traced.trace():
        print("the tower could not be traced here (see the warning above)", file=sys.stderr)
        return 1
    pixels = torch.randn(args.batch, 3, *op_by_op.image_size).to(runtime.device, runtime.dtype)
    frames = op_by_op.taken_in(_arena_frames(args.batch))  # on the device, as a lane has them
    # Each way: the extractor, and the switch interval it runs at.
    ways = {
        "op_by_op": (op_by_op, PYTHON_SWITCH_INTERVAL_S),
        "traced": (traced, PYTHON_SWITCH_INTERVAL_S),
        "traced_short_switch": (traced, short_ms / 1000),
    }
    stages: dict[str, Callable[[ClipFeatureExtractor], object]] = {
        "tower": lambda extractor: extractor.embed_pixels(pixels),
        "model_stage": lambda extractor: extractor.image_features(frames),
    }
    times: dict[str, list[float]] = {}
    for stage, run in stages.items():
        for extractor in (op_by_op, traced):
            run(extractor)  # kernel selection; the traces' first runs (the frame shape's made here)
        for _ in range(args.repeats):
            for way, (extractor, interval_s) in ways.items():
                for where in ("alone", "beside"):
                    times.setdefault(f"{stage}_{way}_{where}", []).append(
                        _time_calls(
                            lambda run=run, extractor=extractor: run(extractor),
                            args.calls,
                            beside_busy=where == "beside",
                            switch_interval_s=interval_s,
                        )
                    )
    median = {name: statistics.median(values) for name, values in times.items()}
    figures: dict[str, object] = {
        "model": args.model,
        "device": str(runtime.device),
        "precision": runtime.precision,
        "batch": args.batch,
        "frame_size": "640x480",
        "switch_interval_ms": PYTHON_SWITCH_INTERVAL_S * 1000,
        "short_switch_interval_ms": short_ms,
        **{f"{name}_ms": value for name, value in median.items()},
        "rounds_ms": times,
    }
    print(f"CLIP {args.model} on {runtime.device} ({runtime.precision}), batch {args.batch}, ms a pass:")
    for stage, label in (("tower", "the image tower"), ("model_stage", "the model stage from arena frames")):
        print(f"{label}:")
        for way in ways:
            alone, beside = median[f"{stage}_{way}_alone"], median[f"{stage}_{way}_beside"]
            rounds = ", ".join(f"{value:.1f}" for value in times[f"{stage}_{way}_beside"])
            print(
                f"  {way}: alone {alone:.1f}, beside a busy Python thread {beside:.1f} "
                f"({beside / alone:.1f}×; rounds {rounds})"
            )
            figures[f"{stage}_{way}_convoy"] = beside / alone
        for where in ("beside", "alone"):
            ratio = median[f"{stage}_traced_{where}"] / median[f"{stage}_op_by_op_{where}"]
            figures[f"{stage}_traced_over_op_by_op_{where}"] = ratio
        print(
            f"  traced ÷ op by op: {figures[f'{stage}_traced_over_op_by_op_beside']:.3f} beside the busy "
            f"thread, {figures[f'{stage}_traced_over_op_by_op_alone']:.3f} alone"
        )
        shorter = median[f"{stage}_traced_short_switch_beside"] / median[f"{stage}_traced_beside"]
        figures[f"{stage}_short_switch_over_python_switch_beside"] = shorter
        print(f"  traced, switch interval {short_ms:g} ms ÷ 5 ms: {shorter:.3f} beside the busy thread")
    write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
