"""What bench/gpu.sh checks before its first step, in one Python start, so that a lent GPU's minutes
are not spent on steps that cannot work or figures that cannot be trusted.

    python bench/gpu_preflight.py --device cuda|cpu

Exits 2 with one line naming what is missing: a package the steps import (without it every step
would fail at its first import, one after another), or, with
`--device cuda`, a CUDA device torch can see. Otherwise prints two lines for summary.json, each a
JSON value: the machine's name, and the compute processes already on the GPU (nvidia-smi's pid,
process name and memory; null without nvidia-smi), with a warning on stderr when there are any:
another process on the GPU makes every figure of the run low. It does not refuse to run then.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
from typing import Any

# What the steps import, and why (the lent machines' image lacks some: README, Benchmark).
NEEDED = {
    "torch": "every step's model",
    "torchvision": "transformers' CLIP processor",
    "transformers": "CLIP",
    "keras": "the head",
    "numpy": "frames",
    "PIL": "frames (Pillow)",
    "sqlalchemy": "the results database",
    "alembic.command": "the results database's migrations (alembic, Mako)",
    "pydantic": "the config",
    "prometheus_client": "the daemon's start",
    "shtab": "the command line",
    "pytest": "the GPU tests",
    "watcher.commands.watch": "the daemon (the repository on PYTHONPATH)",
}
QUERY = "--query-compute-apps=pid,process_name,used_memory"


def missing(modules: dict[str, str]) -> list[str]:
    """Each module that cannot be imported here, with why it is needed and what went wrong."""
    found = []
    for module, why in modules.items():
        try:
            importlib.import_module(module)
        except Exception as error:  # an ImportError, or a package broken at import
            found.append(f"{module} ({why}: {type(error).__name__}: {error})")
    return found


def gpu_processes() -> list[dict[str, Any]] | None:
    """The compute processes on the GPU now, by nvidia-smi; None without it, or where it fails."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        listed = subprocess.run(
            [smi, QUERY, "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if listed.returncode != 0:
        return None
    processes = []
    for row in csv.reader(listed.stdout.splitlines()):
        if len(row) != 3:
            continue  # "No running processes found", or a line cut short
        pid, name, memory = (field.strip() for field in row)
        processes.append(
            {"pid": int(pid) if pid.isdigit() else pid, "process_name": name, "used_memory": memory}
        )
    return processes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), required=True)
    device = parser.parse_args().device
    os.environ["KERAS_BACKEND"] = "torch"  # as model.keras_head does: read at keras's first import
    absent = missing(NEEDED)
    if absent:
        print(f"bench/gpu.sh: {sys.executable} cannot import {'; '.join(absent)}", file=sys.stderr)
        return 2
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        built = torch.version.cuda or "no CUDA"
        print(
            f"bench/gpu.sh: --device cuda, but torch {torch.__version__} ({built}) sees no CUDA device",
            file=sys.stderr,
        )
        return 2
    on_cuda = torch.cuda.is_available()
    machine = torch.cuda.get_device_name(0) if on_cuda else platform.processor() or platform.machine()
    processes = gpu_processes()
    if processes:
        shown = "; ".join(
            f"{entry['pid']} {entry['process_name']} {entry['used_memory']}" for entry in processes
        )
        print(
            f"bench/gpu.sh: warning: already on the GPU at start, every figure may be low: {shown}",
            file=sys.stderr,
        )
    print(json.dumps(machine))
    print(json.dumps(processes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
