"""The daemon's heartbeat row in the `instances` table, so `status` sees every node of a site.

Written every few seconds and once when stopping. A database that is away (restarting) costs a
warning, never the work: the next beat tries again.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine

from watcher.store.errors import StorageError
from watcher.store.instances import Beat, count_crash, record_beat
from watcher.wording import plural

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 5.0


@dataclass
class Progress:
    claimed: int
    frames_ok: int
    frames_failed: int
    frames_per_s: float
    model_version: str


class Heartbeat:
    def __init__(self, engine: Engine, *, instance: str, interval_s: float = HEARTBEAT_INTERVAL_S) -> None:
        self._engine = engine
        self._instance = instance
        self._interval_s = interval_s
        self._host = socket.gethostname()
        self._started_at = datetime.now(UTC)
        self._next_beat = 0.0
        self._failing = False

    def record_start(self, *, stopped_cleanly: bool = False) -> bool:
        """Called once as the daemon starts, before its first beat. This instance's row still
        saying `running` means the previous run never said it stopped: it crashed or was killed.
        That is counted in `crashes`, with the run's last heartbeat as `last_crash_at`, so
        `status` can say so; returns True then. A database that is away costs a warning, never
        the start. `stopped_cleanly` (the run left its clean-stop mark, see watcher.intake.suspects)
        settles it the other way: its last beat, `stopped`, may not have reached a locked
        database."""
        if stopped_cleanly:
            return False
        try:
            crashed = count_crash(self._engine, self._instance)
        except StorageError as error:
            logger.warning("cannot check how %s stopped last time: %s", self._instance, error)
            return False
        if crashed is None:
            return False
        logger.warning(
            "instance %s did not stop cleanly last time (last seen %s): %s so far",
            self._instance,
            crashed.last_crash_at.isoformat(timespec="seconds"),
            plural(crashed.crashes, "crash"),
        )
        return True

    def beat(self, progress: Progress, *, state: str = "running", force: bool = False) -> None:
        if not force and time.monotonic() < self._next_beat:
            return
        self._next_beat = time.monotonic() + self._interval_s
        beat = Beat(
            name=self._instance,
            host=self._host,
            pid=os.getpid(),
            state=state,
            started_at=self._started_at,
            last_seen_at=datetime.now(UTC),
            claimed=progress.claimed,
            frames_ok=progress.frames_ok,
            frames_failed=progress.frames_failed,
            frames_per_s=progress.frames_per_s,
            model_version=progress.model_version,
        )
        try:
            record_beat(self._engine, beat)
        except StorageError as error:
            if not self._failing:
                logger.warning("cannot record the heartbeat of %s: %s", self._instance, error)
            self._failing = True
            return
        if self._failing:
            logger.info("heartbeat of %s recorded again", self._instance)
        self._failing = False
