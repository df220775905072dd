"""`cctv-gender status`: is the daemon running and keeping up? Exit code 1 when unhealthy, for
monitoring, with one line per problem saying why: frames waiting and no daemon, or nothing
processed for `status.stall_after_s`; frames left in progress that no live instance holds; an
instance that holds frames but stopped its heartbeat (frozen); an instance that crashed or died
in the last 15 minutes.

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
from watcher.intake.discovery import scan_inbox
from watcher.intake.placement import UNMOVABLE_DIRNAME
from watcher.intake.suspects import stopped_cleanly
from watcher.service.heartbeat import HEARTBEAT_INTERVAL_S
from watcher.service.instance import LOCK_SUFFIX
from watcher.service.telemetry import DaemonStatus, status_dir
from watcher.store.opening import open_database
from watcher.store.records import Status
from watcher.store.schema import Instance, Result

RECENTLY = timedelta(minutes=15)
RECENTLY_TEXT = "15 minutes"
# A running instance that holds frames and has not beaten for this long is frozen.
FROZEN_AFTER = timedelta(seconds=3 * HEARTBEAT_INTERVAL_S)


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


def _frames_in(area: Path) -> int | None:
    """Frames in one in-progress area (a folder each, named by its key), or None without the area.

    Names starting with '.' are bookkeeping (`.clean-stop`, see watcher.intake.suspects), not frames.
    """
    try:
        with os.scandir(area) as entries:
            return sum(
                1
                for entry in entries
                if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False)
            )
    except OSError:  # gone, or removed by its daemon while we counted
        return None


def _frames_per_area(in_progress: Path) -> dict[str, int]:
    """Frames in each instance's in-progress area, by instance name."""
    try:
        with os.scandir(in_progress) as entries:
            areas = [
                entry.name
                for entry in entries
                if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False)
            ]
    except OSError:
        return {}
    return {name: count for name in sorted(areas) if (count := _frames_in(in_progress / name)) is not None}


def _instances_seen(
    session: Session, *, in_progress: Path, areas: dict[str, int], running: list[str], now: datetime
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
        claimed = areas.get(name)
        seen.append(
            {
                "name": name,
                "host": row.host if row else None,
                "pid": row.pid if row else None,
                "running": name in running,  # its lock is held right now
                "state": row.state if row else None,
                # Its last run stopped cleanly, even if its last beat never reached the database.
                "stopped_cleanly": stopped_cleanly(in_progress / name),
                "last_seen_s": round((now - row.last_seen_at).total_seconds(), 1) if row else None,
                "claimed": claimed if claimed is not None else (row.claimed if row else 0),
                "claimed_at_last_beat": row.claimed if row else None,
                "frames_ok": row.frames_ok if row else None,
                "frames_failed": row.frames_failed if row else None,
                "frames_per_s": row.frames_per_s if row else None,
                "model_version": row.model_version if row else None,
                "crashes": row.crashes if row else None,
                "last_crash_s": (
                    round((now - row.last_crash_at).total_seconds(), 1)
                    if row and row.last_crash_at is not None
                    else None
                ),
            }
        )
    return seen


def _instance_problems(seen: list[dict[str, Any]], *, areas: dict[str, int], running: list[str]) -> list[str]:
    """What is wrong with the instances, one line each."""
    problems = []
    # Counted before the locks were looked at: an instance that started meanwhile holds its own.
    for name, frames in areas.items():
        if frames and name not in running:
            problems.append(
                f"{frames} frames in progress in the area of instance {name}, "
                "which no live instance holds (its lock is free)"
            )
    for item in seen:
        name = item["name"]
        if item["running"] and item["state"] == "running":
            silent_s = item["last_seen_s"]
            holds = max(item["claimed"] or 0, item["claimed_at_last_beat"] or 0)
            if holds and silent_s > FROZEN_AFTER.total_seconds():
                problems.append(
                    f"instance {name} holds {holds} frames but its last heartbeat was {silent_s:.0f} s ago "
                    f"(more than {FROZEN_AFTER.total_seconds():.0f} s): frozen"
                )
        if instance_state(item) == "gone":
            problems.append(
                f"instance {name} died without stopping (last seen {item['last_seen_s']:.0f} s ago)"
            )
        crashed_s = item["last_crash_s"]
        if crashed_s is not None and crashed_s <= RECENTLY.total_seconds():
            problems.append(
                f"instance {name} crashed {crashed_s:.0f} s ago ({item['crashes']} crashes so far)"
            )
    return problems


def _files_in(folder: Path) -> int:
    try:
        with os.scandir(folder) as entries:
            return sum(1 for entry in entries if not entry.name.startswith("."))
    except OSError:
        return 0


def collect_status(config: Config, *, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    # Areas before locks: frames of an instance that started in between are not taken for orphans.
    areas = _frames_per_area(config.in_progress)
    running = _running_instances(config.in_progress)
    statuses = [
        status
        for name in running
        if (status := DaemonStatus.read(status_dir(config.paths.data) / f"{name}.json")) is not None
    ]
    waiting = sum(1 for _ in scan_inbox(config.paths.inbox)) if config.paths.inbox.is_dir() else 0
    in_progress = sum(areas.values())
    engine = open_database(config, migrate=False, read_only=True)
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
        seen = _instances_seen(session, in_progress=config.in_progress, areas=areas, running=running, now=now)
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
    problems += _instance_problems(seen, areas=areas, running=running)
    set_aside = _files_in(config.in_progress / UNMOVABLE_DIRNAME)
    if set_aside:
        problems.append(
            f"{set_aside} frames could not be moved to processed/ or failed/ and wait in "
            f"{config.in_progress / UNMOVABLE_DIRNAME} (their rows say so; see the daemon's log)"
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
    return "stopped" if item["state"] == "stopped" or item.get("stopped_cleanly") else "gone"


def _instance_table(seen: list[dict[str, Any]]) -> str:
    header = (
        "instance", "host", "pid", "state", "last seen", "claimed", "ok", "failed", "frames/s", "crashes",
    )  # fmt: skip
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
            _crashes(item),
        )
        for item in seen
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def _crashes(item: dict[str, Any]) -> str:
    if item["crashes"] is None:
        return "?"
    if item["last_crash_s"] is None:
        return str(item["crashes"])
    return f"{item['crashes']} (last {item['last_crash_s']:.0f} s ago)"
