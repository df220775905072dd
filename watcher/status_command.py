"""`cctv-gender status`: is the daemon running and keeping up? Exit code 1 when unhealthy, for
monitoring: frames are waiting and nothing has been processed for `status.stall_after_s`.

With several daemons on a shared inbox and one database, it lists every instance seen in the last
15 minutes (their heartbeats in the `instances` table), whether its lock is held now, and what it
has claimed (counted in its in-progress area, which lives in the shared inbox)."""

from __future__ import annotations

import fcntl
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from model.registry import current_version
from watcher.config import Config
from watcher.database import open_database
from watcher.discovery import scan_inbox
from watcher.instance import LOCK_SUFFIX
from watcher.store import Instance, Result, Status
from watcher.telemetry import DaemonStatus, status_dir

RECENTLY = timedelta(minutes=15)
RECENTLY_TEXT = "15 minutes"


def _running_instances(in_progress: Path) -> list[str]:
    """Instances whose lock is held right now (a lock that can be taken belongs to nobody)."""
    running = []
    for lock in sorted(in_progress.glob(f"*{LOCK_SUFFIX}")) if in_progress.is_dir() else []:
        descriptor = os.open(lock, os.O_RDONLY)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            running.append(lock.name.removesuffix(LOCK_SUFFIX))
        finally:
            os.close(descriptor)  # also drops the shared lock if we got it
    return running


def _files_in_progress(in_progress: Path) -> int:
    # Running daemons create and remove these folders while we count: os.walk skips what vanished.
    return sum(
        sum(1 for name in files if not name.endswith(LOCK_SUFFIX)) for _, _, files in os.walk(in_progress)
    )


def _claimed_by(in_progress: Path, name: str) -> int | None:
    """Frames in an instance's in-progress area (one folder each), or None without the area."""
    try:
        with os.scandir(in_progress / name) as entries:
            return sum(1 for entry in entries if entry.is_dir(follow_symlinks=False))
    except OSError:
        return None


def _instances_seen(
    session: Session, *, in_progress: Path, running: list[str], now: datetime
) -> list[dict[str, Any]]:
    rows = {
        row.name: row
        for row in session.scalars(
            select(Instance).where(Instance.last_seen_at >= now - RECENTLY).order_by(Instance.name)
        )
    }
    seen = []
    for name in sorted(set(rows) | set(running)):
        row = rows.get(name)
        claimed = _claimed_by(in_progress, name)
        seen.append(
            {
                "name": name,
                "host": row.host if row else None,
                "pid": row.pid if row else None,
                "running": name in running,  # its lock is held right now
                "state": row.state if row else None,
                "last_seen_s": round((now - row.last_seen_at).total_seconds(), 1) if row else None,
                "claimed": claimed if claimed is not None else (row.claimed if row else 0),
                "frames_ok": row.frames_ok if row else None,
                "frames_failed": row.frames_failed if row else None,
                "frames_per_s": row.frames_per_s if row else None,
                "model_version": row.model_version if row else None,
            }
        )
    return seen


def collect_status(config: Config, *, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    running = _running_instances(config.in_progress)
    statuses = [
        status
        for name in running
        if (status := DaemonStatus.read(status_dir(config.paths.data) / f"{name}.json")) is not None
    ]
    waiting = sum(1 for _ in scan_inbox(config.paths.inbox)) if config.paths.inbox.is_dir() else 0
    in_progress = _files_in_progress(config.in_progress)
    engine = open_database(config, migrate=False)
    hour_ago = now - timedelta(hours=1)
    with Session(engine) as session:
        counts = dict(
            session.execute(
                select(Result.status, func.count())
                .where(Result.processed_at >= hour_ago)
                .group_by(Result.status)
            ).all()
        )
        last_row = session.scalar(select(func.max(Result.processed_at)))
        seen = _instances_seen(session, in_progress=config.in_progress, running=running, now=now)
    if last_row is not None and last_row.tzinfo is None:
        last_row = last_row.replace(tzinfo=UTC)
    last_age = (now - last_row).total_seconds() if last_row else None
    model = statuses[0].model_version if statuses else (current_version(config.registry_dir) or "zero-shot")
    problems = []
    if waiting and not running:
        problems.append(f"{waiting} frames waiting and no daemon running")
    elif waiting:
        started = min(datetime.fromisoformat(status.started_at) for status in statuses) if statuses else now
        idle_since = max(last_row, started) if last_row else started
        idle_s = (now - idle_since).total_seconds()
        if idle_s > config.status.stall_after_s:
            problems.append(
                f"{waiting} frames waiting and nothing processed for {idle_s:.0f} s "
                f"(status.stall_after_s = {config.status.stall_after_s:g})"
            )
    return {
        "healthy": not problems,
        "problems": problems,
        "running": bool(running),
        "instances": running,
        "instances_seen": seen,
        "model_version": model,
        "waiting": waiting,
        "in_progress": in_progress,
        "processed_last_hour": counts.get(Status.OK, 0),
        "failed_last_hour": counts.get(Status.FAILED, 0),
        "frames_per_s": round(sum(status.frames_per_s for status in statuses), 1),
        "last_batch_age_s": round(last_age, 1) if last_age is not None else None,
    }


def render_status(status: dict[str, Any], *, output_format: str) -> str:
    if output_format == "json":
        return json.dumps(status, indent=2) + "\n"
    age = status["last_batch_age_s"]
    health = "ok" if status["healthy"] else "UNHEALTHY: " + "; ".join(status["problems"])
    daemon = f"running ({', '.join(status['instances'])})" if status["running"] else "not running"
    lines = [
        f"health:              {health}",
        f"daemon:              {daemon}",
        f"model:               {status['model_version']}",
        f"waiting in inbox:    {status['waiting']}",
        f"in progress:         {status['in_progress']}",
        f"processed last hour: {status['processed_last_hour']}",
        f"failed last hour:    {status['failed_last_hour']}",
        f"frames/s (recent):   {status['frames_per_s']}",
        f"last batch:          {'never' if age is None else f'{age:.0f} s ago'}",
    ]
    if status["instances_seen"]:
        lines += [
            "",
            f"instances seen in the last {RECENTLY_TEXT}:",
            _instance_table(status["instances_seen"]),
        ]
    return "\n".join(lines) + "\n"


def instance_state(item: dict[str, Any]) -> str:
    if item["running"]:
        return "running"
    # Its lock is free: it stopped cleanly, or it died without saying so (its frames are adopted).
    return "stopped" if item["state"] == "stopped" else "gone"


def _instance_table(seen: list[dict[str, Any]]) -> str:
    header = ("instance", "host", "pid", "state", "last seen", "claimed", "ok", "failed", "frames/s")
    rows = [
        (
            item["name"],
            item["host"] or "?",
            str(item["pid"] or "?"),
            instance_state(item),
            "?" if item["last_seen_s"] is None else f"{item['last_seen_s']:.0f} s ago",
            str(item["claimed"]),
            str(item["frames_ok"] if item["frames_ok"] is not None else "?"),
            str(item["frames_failed"] if item["frames_failed"] is not None else "?"),
            str(item["frames_per_s"] if item["frames_per_s"] is not None else "?"),
        )
        for item in seen
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)
