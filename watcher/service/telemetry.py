"""What the daemon tells the outside world: systemd (READY, STATUS, WATCHDOG, STOPPING), the
status file `cctv-gender status` reads, and Prometheus metrics."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from watcher.reports import BatchReport
from watcher.service.metrics import Metrics
from watcher.service.notify import SystemdNotifier

logger = logging.getLogger(__name__)

RECENT_BATCHES = 10
# The status file is written at most this often while batches stream by (a write a batch, 25 and
# more a second on a GPU, was the loop thread's largest cost a batch after the claims); what is
# held back is written at the next loop turn after that, and when the daemon stops.
STATUS_WRITE_EVERY_S = 0.25


@dataclass
class DaemonStatus:
    instance: str
    pid: int
    model_version: str
    started_at: str
    updated_at: str
    waiting: int = 0
    last_batch_at: str | None = None
    last_batch_frames: int = 0
    frames_per_s: float = 0.0

    @classmethod
    def read(cls, path: Path) -> DaemonStatus | None:
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None


def status_dir(data: Path) -> Path:
    return data / "status"


class Telemetry:
    def __init__(
        self,
        *,
        instance: str,
        data: Path,
        model_version: str,
        notifier: SystemdNotifier | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._notifier = notifier or SystemdNotifier({})
        self._metrics = metrics
        self._path = status_dir(data) / f"{instance}.json"
        now = _now()
        self.status = DaemonStatus(
            instance=instance, pid=os.getpid(), model_version=model_version, started_at=now, updated_at=now
        )
        self._recent: deque[tuple[int, float]] = deque(maxlen=RECENT_BATCHES)
        self._last_status_note = 0.0
        self._last_write = -STATUS_WRITE_EVERY_S
        self._unwritten = False
        if metrics is not None:
            metrics.model.info({"version": model_version})

    def ready(self, *, waiting: int) -> None:
        self.status.waiting = waiting
        self._write()
        self._notifier.ready(self._summary())

    def alive(self, *, busy_s: float | None) -> None:
        """The loop is turning: feed the watchdog, unless the batch in flight (busy for `busy_s`)
        has run for more than half the watchdog interval. A model call that hangs then starves
        the watchdog and systemd restarts the service; a long backlog, batch after batch, does not.
        """
        interval = self._notifier.watchdog_interval_s
        if interval is not None and busy_s is not None and busy_s > interval / 2:
            return
        self._notifier.watchdog()

    def watchdog_due(self) -> bool:
        """Whether alive() could feed the watchdog now (a check cheap enough for every frame)."""
        return self._notifier.watchdog_due()

    def turn(self, *, waiting: int, busy_s: float | None) -> None:
        """Once per loop turn."""
        self.alive(busy_s=busy_s)
        self.status.waiting = waiting
        if self._unwritten:
            self._write_when_due()
        if self._metrics is not None:
            self._metrics.queue_depth.set(waiting)

    def batch_done(self, report: BatchReport) -> None:
        self._recent.append((report.frames, report.seconds))
        frames, seconds = sum(f for f, _ in self._recent), sum(s for _, s in self._recent)
        self.status.frames_per_s = round(frames / seconds, 1) if seconds > 0 else 0.0
        self.status.last_batch_at = _now()
        self.status.last_batch_frames = report.frames
        self.status.model_version = report.model_version or self.status.model_version
        if self._metrics is not None:
            self._metrics.record_batch(report)
            self._metrics.model.info({"version": self.status.model_version})
        self._unwritten = True
        self._write_when_due()
        if time.monotonic() - self._last_status_note >= 1.0:
            self._last_status_note = time.monotonic()
            self._notifier.status(self._summary())

    def stopping(self) -> None:
        self._notifier.stopping()

    def flush(self) -> None:
        """The status file as it is now, if a batch changed it since it was last written."""
        if self._unwritten:
            self._write()

    def _summary(self) -> str:
        return (
            f"{self.status.waiting} waiting, {self.status.frames_per_s:.1f} frames/s, "
            f"model {self.status.model_version}"
        )

    def _write_when_due(self) -> None:
        if time.monotonic() - self._last_write >= STATUS_WRITE_EVERY_S:
            self._write()

    def _write(self) -> None:
        self._last_write, self._unwritten = time.monotonic(), False
        self.status.updated_at = _now()
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            staging = self._path.with_name(f".{self._path.name}.tmp")
            staging.write_text(json.dumps(asdict(self.status), indent=2) + "\n", encoding="utf-8")
            os.replace(staging, self._path)
        except OSError as error:
            # Observability must never stop the work.
            logger.warning("cannot write the status file %s: %s", self._path, error)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
