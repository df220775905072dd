"""What the benchmarks share: the model they build, frames to drop, and the daemon as a process.

Run the benchmarks from the repository root with the project's venv, e.g.
`.venv/bin/python bench/latency.py`; this module is imported by them, not run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.helpers import bmp_bytes  # noqa: E402
from tests.tiny_clip import build_clip_checkpoint  # noqa: E402

MODELS = ("vit-b32", "tiny")


def build_model(folder: Path, kind: str) -> Path:
    """A random-weight CLIP saved with save_pretrained: the real ViT-B/32 architecture (the default
    CLIPConfig) or the tests' tiny one. The weights do not change the speed."""
    real = kind == "vit-b32"
    return build_clip_checkpoint(
        folder, vision={} if real else None, text={} if real else None, projection_dim=512 if real else 16
    )


class FrameMaker:
    """Distinct 24-bit BMP frames of one size, fast: one random picture, each copy stamped with
    its index so no two files have the same content."""

    def __init__(self, *, width: int, height: int) -> None:
        self._template = bytearray(bmp_bytes(width=width, height=height, seed=1))
        self._pixels_at = int.from_bytes(self._template[10:14], "little")

    def frame(self, index: int) -> bytes:
        data = self._template
        data[self._pixels_at : self._pixels_at + 8] = index.to_bytes(8, "little")
        return bytes(data)

    def write(self, path: Path, index: int) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.frame(index))  # opened, written, closed: as an exporter does
        return path


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
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._log.close()
