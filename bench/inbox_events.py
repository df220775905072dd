"""CPU a frame of the live daemon's inbox events (watcher.intake.events) through a mass drop.

    .venv/bin/python bench/inbox_events.py [--frames 8192] [--repeats 5] [--baseline DIR] [--json FILE]

A process of its own runs only the events reader on a fresh inbox (this checkout's, or that of
`--baseline DIR`, e.g. a `git worktree` of an earlier commit; one before 2026-11-27's inotify
reader needs `pip install 'watchdog>=7.1,<8'` in the venv) and takes its hints as the daemon's
loop does. This process then does to the frames what a site and the daemon do: renames
`--frames` frames into a camera folder at once (a mass drop, as an exporter that writes elsewhere
and renames in makes it), renames each out into the in-progress area (the daemon's claims), and
writes a marker frame. The reader's process CPU (getrusage) from the first rename to the marker's
"closed after writing" is the figure, a frame; the events are hints only, so it is the whole cost
of hearing about frames live, on the daemon's GIL. Checked: every dropped frame was hinted. Runs
alternate between the checkouts; the median of `--repeats` counts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness import checkouts, in_turn, write_json

_READER = """
import json, resource, sys, threading, time
from pathlib import Path, PurePosixPath
sys.path[:0] = [{repo!r}]
from watcher.intake.events import InboxEvents

wake = threading.Event()
events = InboxEvents(Path({inbox!r}), wake)
events.start()
print("ready", flush=True)
sys.stdin.readline()
before = resource.getrusage(resource.RUSAGE_SELF)
hinted = set()
deadline = time.monotonic() + 300
while time.monotonic() < deadline:  # an overflowed queue may have lost the marker: not forever
    wake.wait(timeout=1)
    wake.clear()
    taken = events.take()
    hinted |= taken.hints
    if PurePosixPath("cam-0", "marker.bmp") in taken.finished or taken.rescan:
        break
after = resource.getrusage(resource.RUSAGE_SELF)
events.stop()
spent = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
print(json.dumps({{"cpu_s": spent, "hinted": len(hinted - {{PurePosixPath("cam-0", "marker.bmp")}})}}))
"""


def measure(repo: Path, root: Path, frames: int) -> dict[str, Any]:
    """One mass drop and its claims, heard by `repo`'s events reader in a process of its own."""
    inbox, staging = root / "inbox", root / "staging"
    camera, area = inbox / "cam-0", inbox / ".in-progress"
    for folder in (camera, area, staging):
        folder.mkdir(parents=True)
    for index in range(frames):
        (staging / f"{index:06d}.bmp").write_bytes(b"BM" + index.to_bytes(8, "little"))
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER.format(repo=str(repo), inbox=str(inbox))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reader.stdin is not None and reader.stdout is not None
    try:
        if reader.stdout.readline().strip() != "ready":
            raise RuntimeError("the events reader did not start")
        reader.stdin.write("go\n")
        reader.stdin.flush()
        names = sorted(os.listdir(staging))
        for name in names:  # the drop
            os.rename(staging / name, camera / name)
        for name in names:  # the claims
            os.rename(camera / name, area / name)
        (camera / "marker.bmp").write_bytes(b"BM")
        figures: dict[str, Any] = json.loads(reader.stdout.readline())
        reader.wait(timeout=60)
    finally:
        if reader.poll() is None:
            reader.kill()
    if figures["hinted"] != frames:
        raise RuntimeError(f"{repo}: {figures['hinted']} of {frames} dropped frames hinted")
    return {"us_a_frame": figures["cpu_s"] / frames * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", type=Path, default=None, metavar="DIR", help="another checkout")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE")
    args = parser.parse_args()
    compared = checkouts(args.baseline)
    runs: dict[str, list[float]] = {name: [] for name in compared}
    with tempfile.TemporaryDirectory(prefix="cctv-inbox-events-") as temp:
        for repeat in range(args.repeats):
            for name, repo in in_turn(compared, repeat):
                root = Path(temp) / f"{name}-{repeat}"
                runs[name].append(measure(repo, root, args.frames)["us_a_frame"])
                shutil.rmtree(root)
    figures: dict[str, Any] = {"frames": args.frames}
    for name, values in runs.items():
        median = statistics.median(values)
        figures[name] = {"us_a_frame": round(median, 1), "runs_us": [round(value, 1) for value in values]}
        print(
            f"{name}: the inbox's events cost {median:.1f} µs of CPU a frame through a mass drop of "
            f"{args.frames} frames and their claims (runs {', '.join(f'{value:.1f}' for value in values)})"
        )
    if "baseline" in figures:
        ratio = figures["ours"]["us_a_frame"] / figures["baseline"]["us_a_frame"]
        figures["ratio_to_baseline"] = round(ratio, 3)
        print(f"ours / baseline {ratio:.2f}")
    if args.json is not None:
        write_json(args.json, figures)


if __name__ == "__main__":
    main()
