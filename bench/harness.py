"""What the benchmarks share: the model they build, frames to drop, config files, and the daemon as
a process.

Run the benchmarks from the repository root with the project's venv, e.g.
`.venv/bin/python bench/latency.py`; this module is imported by them, not run. The generated
inputs (CLIP checkpoint, frames) come from `model.synthetic`, as the test suite's do.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from model.synthetic import ClipSize, FrameMaker, build_clip_checkpoint

REPO = Path(__file__).resolve().parent.parent
# A folder where build_model keeps one checkpoint of each kind for every benchmark run while it is
# set: bench/gpu.sh's steps built a ViT-B/32 each, ~8 s apiece of a lent GPU's minutes.
SHARED_CHECKPOINTS = "CCTV_BENCH_CHECKPOINTS"
MODELS: tuple[ClipSize, ...] = ("vit-b32", "tiny")

__all__ = [
    "MODELS",
    "REPO",
    "DaemonProcess",
    "FrameMaker",
    "build_model",
    "busy_python",
    "check_measured_in",
    "checkouts",
    "cpu_run",
    "files_under",
    "in_turn",
    "measured_in_checkout",
    "write_config",
]


def build_model(folder: Path, kind: ClipSize) -> Path:
    """A random-weight CLIP saved with save_pretrained: the real ViT-B/32 architecture or the tests'
    tiny one. The weights do not change the speed. With SHARED_CHECKPOINTS set (bench/gpu.sh sets
    it) the checkpoint of each kind is built once in that folder, and `folder` is not used."""
    shared = os.environ.get(SHARED_CHECKPOINTS)
    if not shared:
        return build_clip_checkpoint(folder, size=kind)
    built = Path(shared) / kind
    if not built.is_dir():
        # Saved aside and renamed: a step stopped mid-save leaves no half checkpoint for the next.
        staging = Path(shared) / f".{kind}-{os.getpid()}"
        build_clip_checkpoint(staging, size=kind)
        try:
            staging.rename(built)
        except OSError:  # another process's is there now: the same weights (seed 0)
            shutil.rmtree(staging, ignore_errors=True)
    return built


@contextmanager
def busy_python(threads: int) -> Iterator[None]:
    """`threads` threads running Python that never waits while the body runs, as the daemon's
    loop claiming a backlog or a lane building rows does between its waits: what a call that
    gives the GIL back competes with to take it again."""
    stop = threading.Event()

    def spin() -> None:
        count = 0
        while not stop.is_set():
            count += 1

    spinners = [threading.Thread(target=spin, name="busy-python", daemon=True) for _ in range(threads)]
    for thread in spinners:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in spinners:
            thread.join()


def checkouts(baseline: Path | None) -> dict[str, Path]:
    """The checkouts a benchmark measures: this one ("ours") and, with `--baseline DIR`, that one
    ("baseline": a `git worktree` of the code before a change, say)."""
    return {"ours": REPO} | ({"baseline": baseline.resolve()} if baseline is not None else {})


def in_turn(compared: dict[str, Path], repeat: int) -> list[tuple[str, Path]]:
    """The checkouts in repeat `repeat`'s order: reversed every other repeat, so that neither always
    runs first (the VM's speed drifts within minutes, and a first run can warm what the second uses)."""
    order = list(compared.items())
    return order if repeat % 2 == 0 else order[::-1]


def measured_in_checkout(repo: Path, module: str, call: str, *, cwd: Path | None = None) -> dict[str, Any]:
    """`module.call` (a bench module's function, called as Python text: `measure(Path('x'))`) in
    a process of its own with the `watcher` package of checkout `repo` (this one, or a `git
    worktree` of the code before a change): the figures it printed last, as JSON."""
    code = (
        f"import sys; sys.path[:0] = [{str(repo)!r}, {str(REPO / 'bench')!r}]; import json, {module}; "
        f"print(json.dumps({module}.{call}))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the measurement failed:\n{done.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    check_measured_in(figures, repo)
    return figures


def check_measured_in(figures: dict[str, Any], repo: Path) -> None:
    """Refuse a child's figures unless the `watcher` package it ran (its "watcher": the package's
    path) is checkout `repo`'s: another checkout first on its path would pass as this one."""
    if not Path(str(figures["watcher"])).is_relative_to(repo):
        raise RuntimeError(f"measured {figures['watcher']}, not {repo}")


def write_json(path: Path, figures: dict[str, Any], *, quietly: bool = False) -> None:
    """A benchmark's figures as JSON at `path` (its folder made if needed), and where they went
    (unless `quietly`: a partial write before the end). Written beside it and renamed over it: a
    run stopped mid-write (gpu.sh's step limit) leaves the last whole file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(json.dumps(figures, indent=2) + "\n")
    staging.replace(path)
    if not quietly:
        print(f"written to {path}")


def own_memory_mib() -> dict[str, float]:
    """This process's resident memory now, by kind (Linux's /proc/self/status), in MiB."""
    wanted = {"VmHWM": "peak", "VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "RssShmem": "shmem"}
    status = Path("/proc/self/status")
    lines = status.read_text().splitlines() if status.exists() else []
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    return {
        name: round(int(fields[key].split()[0]) / 1024, 1) for key, name in wanted.items() if key in fields
    }


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    """A config.toml of `sections` (strings, numbers, booleans): the keys the shipped defaults don't suit."""
    lines = []
    for section, values in sections.items():
        lines += [f"[{section}]", *(f"{key} = {_toml_value(value)}" for key, value in values.items()), ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def cpu_run(
    root: Path,
    clip: Path,
    frames: int,
    maker: FrameMaker,
    *,
    batch: dict[str, Any],
    model: dict[str, Any] | None = None,
    flush: bool = True,
) -> Path:
    """A fresh root for one `watch --once` on the CPU: `frames` frames in four camera folders of
    its inbox, and its config (`batch` and any `model` keys beside the CLIP at `clip`). `flush`
    syncs the frames to disk first: their writeback is not the daemon's work."""
    for name in ("inbox", "processed", "failed", "data"):
        (root / name).mkdir(parents=True)
    for index in range(frames):
        maker.write(root / "inbox" / f"cam-{index % 4}" / f"{index:06d}.bmp", index)
    config = write_config(
        root / "config.toml",
        {
            "paths": {"inbox": "inbox", "processed": "processed", "failed": "failed", "data": "data"},
            "inbox": {"settle_ms": 0},
            "batch": batch,
            "model": {"clip": str(clip), "device": "cpu", "runtime": "torch", "precision": "fp32"}
            | (model or {}),
            "logging": {"level": "warning"},
        },
    )
    if flush:
        os.sync()
    return config


def files_under(folder: Path) -> list[str]:
    """Frame files below `folder`, relative, sorted: instance locks and clean-stop marks left out."""
    found = []
    # os.walk, not rglob: running daemons remove folders while we look, and walk skips those.
    for directory, _, names in os.walk(folder):
        parent = Path(directory)
        for name in names:
            if not (name.endswith(".lock") and parent.name == ".in-progress") and name != ".clean-stop":
                found.append((parent / name).relative_to(folder).as_posix())
    return sorted(found)


def find_py_spy() -> str | None:
    """py-spy's program: on PATH, beside this Python, or where `pip install --target DIR` puts it
    (DIR/bin, DIR on sys.path: how the packages travel to a lent GPU machine, see README)."""
    candidates = [
        Path(sys.executable).parent / "py-spy",
        *(Path(entry) / "bin" / "py-spy" for entry in sys.path),
    ]
    beside = (str(path) for path in candidates if os.access(path, os.X_OK))
    return shutil.which("py-spy") or next(beside, None)


def _stacks_of(pid: int) -> str:
    """Every thread's stack in process `pid`, by py-spy (find_py_spy)."""
    py_spy = find_py_spy()
    if py_spy is None:
        return "(no py-spy to take them)"
    try:
        dumped = subprocess.run(
            [py_spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"(py-spy failed: {error})"
    return dumped.stdout or dumped.stderr


class DaemonProcess:
    """`cctv-gender watch` as systemd runs it: a process of its own, stopped with SIGTERM."""

    def __init__(self, config: Path, *, data: Path, log: Path) -> None:
        env = {key: value for key, value in os.environ.items() if key != "JOURNAL_STREAM"}
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "watcher", "watch", "--config", str(config)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env=env,
        )
        self._status = data / "status"
        self.log = log

    def wait_ready(self, timeout: float = 300.0) -> None:
        # The status file appears once the daemon has loaded the model and scanned the inbox.
        deadline = time.monotonic() + timeout
        while not (self._status.is_dir() and any(self._status.glob("*.json"))):
            if self.process.poll() is not None:
                raise RuntimeError(f"the daemon exited with {self.process.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the daemon was not ready after {timeout:.0f} s; see {self.log}")
            time.sleep(0.05)

    def memory_mib(self) -> tuple[float, float]:
        """(current RSS, peak RSS) in MiB, from the kernel's accounting of the process."""
        fields = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) / 1024
        return fields["VmRSS"], fields["VmHWM"]

    def stop(self, timeout: float = 120.0) -> int:
        """SIGTERM, and its exit code once it has stopped. A daemon that does not stop in `timeout`
        is killed, and the error carries its threads' stacks (py-spy, when there is one) and the end
        of its log: a run's temporary folder, log included, is gone by the time anyone looks."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stacks = _stacks_of(self.process.pid)
            self.process.kill()
            self.process.wait()
            self._log.flush()
            tail = self.log.read_text(errors="replace")[-4000:]
            said = f"the daemon did not stop {timeout:.0f} s after SIGTERM"
            raise RuntimeError(f"{said}; its threads:\n{stacks}\nits log:\n{tail}") from None
        finally:
            self._log.close()
