"""CLIP's image tower beside a thread running Python: op by op from Python, and traced (model.traced).

    .venv/bin/python bench/gil_convoy.py [--model tiny|vit-b32] [--device auto] [--batch 32]
                                         [--repeats 5] [--calls 5] [--json FILE]

Run from Python, the tower gives the GIL back around each of its operations and must take it
again after each one; while another thread of the process runs Python, each of those takes can
wait up to the interpreter's switch interval (5 ms). In the daemon the loop, the claims, the rows
and the moves are that other Python; on a GPU, where a batch's whole forward is a few milliseconds
of kernel launches, those waits are what the model stage is made of. This measures it directly:
`--calls` passes of one batch of random pixels (the model's input, preprocessing left out), alone
and then with one thread beside them running a pure-Python loop (the worst case: it never waits),
for the tower run op by op (the baseline, `model.traced = false`) and for its trace (the default),
rounds alternating between the two; medians of `--repeats` rounds. On a CPU the model gets one
thread, the busy thread a core of its own where there are two. Prints each figure with the ratios
(beside ÷ alone: the convoy's cost; traced ÷ op by op beside: what the trace saves there) and
writes them as JSON.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from harness import MODELS, REPO, build_model, write_json

sys.path.insert(0, str(REPO))


def _busy_python(stop: threading.Event) -> None:
    """Python that never waits, as a thread of the daemon building rows does between its waits."""
    count = 0
    while not stop.is_set():
        count += 1


def _time_calls(run: Callable[[], object], calls: int, *, beside_busy: bool) -> float:
    """Milliseconds a call of `run`, the mean of `calls`, optionally beside a busy Python thread."""
    stop = threading.Event()
    busy = threading.Thread(target=_busy_python, args=(stop,), name="busy-python")
    if beside_busy:
        busy.start()
    try:
        started = time.perf_counter()
        for _ in range(calls):
            run()
        return (time.perf_counter() - started) / calls * 1000
    finally:
        stop.set()
        if beside_busy:
            busy.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="tiny")
    parser.add_argument("--device", default="auto", help="as model.device: auto, cpu, cuda, cuda:N")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "out" / "gil_convoy.json")
    args = parser.parse_args()

    import torch

    from model.clip_features import ClipFeatureExtractor
    from model.runtime import resolve_runtime

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
    ways = {"op_by_op": op_by_op, "traced": traced}
    for extractor in ways.values():
        extractor.embed_pixels(pixels)  # kernel selection, the trace's first run
    times: dict[str, list[float]] = {f"{way}_{where}": [] for way in ways for where in ("alone", "beside")}
    for _ in range(args.repeats):
        for way, extractor in ways.items():
            for where in ("alone", "beside"):
                times[f"{way}_{where}"].append(
                    _time_calls(
                        lambda extractor=extractor: extractor.embed_pixels(pixels),
                        args.calls,
                        beside_busy=where == "beside",
                    )
                )
    median = {name: statistics.median(values) for name, values in times.items()}
    figures = {
        "model": args.model,
        "device": str(runtime.device),
        "precision": runtime.precision,
        "batch": args.batch,
        "switch_interval_ms": sys.getswitchinterval() * 1000,
        **{f"{name}_ms": value for name, value in median.items()},
        "rounds_ms": times,
        "op_by_op_convoy": median["op_by_op_beside"] / median["op_by_op_alone"],
        "traced_convoy": median["traced_beside"] / median["traced_alone"],
        "traced_over_op_by_op_beside": median["traced_beside"] / median["op_by_op_beside"],
        "traced_over_op_by_op_alone": median["traced_alone"] / median["op_by_op_alone"],
    }
    print(f"CLIP {args.model} on {runtime.device} ({runtime.precision}), batch {args.batch}, ms a pass:")
    for way in ways:
        alone, beside = median[f"{way}_alone"], median[f"{way}_beside"]
        rounds = ", ".join(f"{value:.1f}" for value in times[f"{way}_beside"])
        print(
            f"  {way}: alone {alone:.1f}, beside a busy Python thread {beside:.1f} "
            f"({beside / alone:.1f}×; rounds {rounds})"
        )
    print(
        f"traced ÷ op by op: {figures['traced_over_op_by_op_beside']:.3f} beside the busy thread, "
        f"{figures['traced_over_op_by_op_alone']:.3f} alone"
    )
    write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
