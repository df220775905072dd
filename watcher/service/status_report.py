"""What `cctv-gender status` found: plain frozen records, built once and then only read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

# Instances seen this recently are listed, and their crashes this recent are problems.
RECENTLY = timedelta(minutes=15)
RECENTLY_TEXT = "15 minutes"


@dataclass(frozen=True)
class InstanceView:
    """One instance seen lately: its heartbeat row (None fields without one) and its lock and area."""

    name: str
    host: str | None
    pid: int | None
    running: bool  # its lock is held right now
    state: str | None  # what its row says: running or stopped
    # Its last run stopped cleanly, even if its last beat never reached the database.
    stopped_cleanly: bool
    last_seen_s: float | None
    claimed: int  # frames in its in-progress area, else what its last beat said
    claimed_at_last_beat: int | None
    frames_ok: int | None
    frames_failed: int | None
    frames_per_s: float | None
    model_version: str | None
    crashes: int | None
    last_crash_s: float | None


@dataclass(frozen=True)
class StatusReport:
    """The whole answer; its fields, in this order, are the JSON output's keys."""

    healthy: bool
    problems: tuple[str, ...]
    running: bool
    instances: tuple[str, ...]  # whose lock is held
    instances_seen: tuple[InstanceView, ...]
    model_version: str
    waiting: int
    in_progress: int
    processed_last_hour: int
    failed_last_hour: int
    frames_per_s: float
    last_batch_age_s: float | None
