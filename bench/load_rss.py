"""The host memory that loading CLIP for a GPU costs: peak RSS of the load and what stays after it.

    .venv/bin/python bench/load_rss.py [--model vit-b32|tiny] [--repeats 3] [--baseline DIR] [--json PATH]

Each run is a fresh process that builds `ClipFeatureExtractor` in fp16 for the GPU, as the daemon
does at start, and reports its VmHWM (the peak) and its RSS after the load (heap and mapped files
apart), and the load's own part of both: over the RSS its imports (torch, transformers) had taken.
`--baseline DIR` runs the same with another checkout's code (a `git worktree`), the runs
alternating, so the two are compared in one run on one machine.

Where there is no GPU, the device is emulated: the model goes to torch's `meta` device (which
holds no data) after every weight has been read once on the host, which is what a copy to a GPU
does there. What the GPU itself holds is not in these figures, nor is the CUDA context: both ways
pay that alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import MODELS, REPO, build_model, checkouts, in_turn, write_json

# The child: the extractor built as the daemon builds it, then its memory, as one JSON line.
_CHILD = """
import gc, json, sys
sys.path.insert(0, {repo!r})
sys.path.append({bench!r})  # the checkout's packages first; this one's harness
import torch
from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel  # what the extractor imports
from harness import own_memory_mib
from model.clip_features import ClipFeatureExtractor
from model.runtime import Runtime

before = own_memory_mib()["rss"]

device = torch.device("cuda" if torch.cuda.is_available() else "meta")
if device.type == "meta":
    to = torch.nn.Module.to

    def read_then_move(module, *args, **kwargs):
        # What a copy to a GPU does on the host: read every weight once, where it lies.
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                if tensor.device.type == "cpu" and tensor.is_floating_point():
                    tensor.sum()
        return to(module, *args, **kwargs)

    torch.nn.Module.to = read_then_move
ClipFeatureExtractor({clip!r}, runtime=Runtime(device=device, precision="fp16"))
gc.collect()
mib = own_memory_mib()
# The load's own part: over what the imports (torch, transformers) had already taken.
mib |= {{"load_peak": mib["peak"] - before, "load_kept": mib["rss"] - before}}
print(json.dumps({{"device": device.type, **mib}}))
"""


def measure(clip: Path, repo: Path) -> dict[str, float]:
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD.format(repo=str(repo), bench=str(Path(__file__).parent), clip=str(clip)),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="vit-b32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", type=Path, default=None, metavar="DIR", help="another checkout")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "out" / "load_rss.json")
    args = parser.parse_args()
    compared = checkouts(args.baseline)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in compared}
    with tempfile.TemporaryDirectory(prefix="cctv-load-rss-") as scratch:
        clip = build_model(Path(scratch) / "clip", args.model)
        for repeat in range(args.repeats):
            for name, repo in in_turn(compared, repeat):
                runs[name].append(measure(clip, repo))
    result: dict[str, object] = {"model": args.model, "device": runs["ours"][0]["device"], "runs": runs}
    for name, measured in runs.items():
        for key, label in (
            ("peak", "peak"),
            ("rss", "after_load"),
            ("anon", "heap"),
            ("file", "files"),
            ("load_peak", "load_own_peak"),
            ("load_kept", "load_own_kept"),
        ):
            result[f"{name}_{label}_mib"] = round(statistics.median(run[key] for run in measured), 1)
    print(
        f"CLIP {args.model} loaded in fp16 for {result['device']}, median of {args.repeats} fresh processes:"
    )
    for name in compared:
        labels = ("peak", "after_load", "heap", "files", "load_own_peak", "load_own_kept")
        figures = {label: result[f"{name}_{label}_mib"] for label in labels}
        print(
            f"  {name:8s} peak {figures['peak']:7.1f} MiB, after the load {figures['after_load']:7.1f}"
            f" (heap {figures['heap']:.1f}, mapped files {figures['files']:.1f}); the load's own:"
            f" peak {figures['load_own_peak']:.1f}, kept {figures['load_own_kept']:.1f}"
        )
    if args.baseline:
        for label in ("peak", "after_load", "load_own_peak", "load_own_kept"):
            ratio = float(result[f"ours_{label}_mib"]) / float(result[f"baseline_{label}_mib"])  # type: ignore[arg-type]
            result[f"ours_over_baseline_{label}"] = round(ratio, 3)
            print(f"  ours / baseline, {label.replace('_', ' ')}: {ratio:.2f}")
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
