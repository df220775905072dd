"""`cctv-gender status`: is the daemon running and keeping up? Exit code 1 when unhealthy, for
monitoring, with one line per problem saying why (see watcher.service.status_health).

With several daemons on a shared inbox and one database, it lists every instance seen in the last
15 minutes (their heartbeats in the `instances` table), whether its lock is held now, and what it
has claimed (counted in its in-progress area, which lives in the shared inbox).

This module only gathers: disk probes (status_probes), the database's rows (watcher.store.readers),
the health rules (status_health) and the rendering (status_render) are each their own."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine

from model.registry import HEAD_FILE, HeadMetadata, RegistryError, current_version, version_dir
from model.registry_files import archive_problem
from watcher.config import Config
from watcher.intake.folder_mounts import recorded_changes
from watcher.intake.folders import FOLDERS_MARK
from watcher.intake.placement import UNMOVABLE_DIRNAME
from watcher.intake.suspects import stopped_cleanly
from watcher.service.status_health import (
    folder_problems,
    inbox_problems,
    instance_problems,
    instance_state,
    set_aside_problems,
)
from watcher.service.status_probes import files_in, frames_per_area, frames_waiting, running_instances
from watcher.service.status_render import render_status
from watcher.service.status_report import RECENTLY, InstanceView, StatusReport
from watcher.service.telemetry import DaemonStatus, status_dir
from watcher.store.instances import InstanceRecord
from watcher.store.opening import open_database
from watcher.store.readers import recent_activity

__all__ = ["InstanceView", "StatusReport", "collect_status", "instance_state", "render_status"]


def collect_status(
    config: Config, *, now: datetime | None = None, engine: Engine | None = None
) -> StatusReport:
    """`engine`: a read-only engine on the config's database to use (the web app's); else one is
    opened for this call."""
    now = now or datetime.now(UTC)
    # Areas before locks: frames of an instance that started in between are not taken for orphans.
    areas = frames_per_area(config.in_progress)
    running = running_instances(config.in_progress)
    statuses = [
        status
        for name in running
        if (status := DaemonStatus.read(status_dir(config.paths.data) / f"{name}.json")) is not None
    ]
    waiting = frames_waiting(config.paths.inbox)
    engine = engine or open_database(config, migrate=False, read_only=True)
    activity = recent_activity(engine, processed_since=now - timedelta(hours=1), seen_since=now - RECENTLY)
    seen = _instances_seen(
        activity.instances, in_progress=config.in_progress, areas=areas, running=running, now=now
    )
    started_at = min(datetime.fromisoformat(status.started_at) for status in statuses) if statuses else None
    unmovable = config.in_progress / UNMOVABLE_DIRNAME
    # A running daemon says what it serves; else the registry's pointer is read.
    served, registry_problems = (statuses[0].model_version, []) if statuses else _served(config)
    problems = [
        *inbox_problems(
            waiting=waiting,
            running=bool(running),
            started_at=started_at,
            last_processed_at=activity.last_processed_at,
            now=now,
            stall_after_s=config.status.stall_after_s,
        ),
        *_folder_problems(config),
        *instance_problems(seen, areas=areas, running=running),
        *set_aside_problems(files_in(unmovable), folder=unmovable),
        *registry_problems,
    ]
    last = activity.last_processed_at
    return StatusReport(
        healthy=not problems,
        problems=tuple(problems),
        running=bool(running),
        instances=running,
        instances_seen=seen,
        model_version=served,
        waiting=waiting,
        in_progress=sum(areas.values()),
        processed_last_hour=activity.processed,
        failed_last_hour=activity.failed,
        frames_per_s=round(sum(status.frames_per_s for status in statuses), 1),
        last_batch_age_s=round((now - last).total_seconds(), 1) if last is not None else None,
    )


def _folder_problems(config: Config) -> list[str]:
    paths = config.paths
    site, mark = paths.site_folders(), paths.data / FOLDERS_MARK
    # os.path.exists: a paths.data whoever runs status may not enter is no mark, not an error.
    return folder_problems(site, made_once=os.path.exists(mark), moved=recorded_changes(site, mark=mark))


def _served(config: Config) -> tuple[str, list[str]]:
    """The head the registry serves, and, where its pointer cannot be read or names a version
    whose head file or metadata is gone or unreadable (a daemon does not start on either), the
    problem. Only the metadata and the head file's end (is it a zip?) are read: Keras is not loaded."""
    try:
        version = current_version(config.registry_dir)
    except RegistryError as error:
        return "unknown", [f"the served head cannot be known: {error}"]
    if version is None:
        return "zero-shot", []
    try:
        folder = version_dir(config.registry_dir, version)
        HeadMetadata.read(folder)
    except RegistryError as error:
        return version, [f"the served head cannot be known: {error}"]
    if (problem := archive_problem(folder / HEAD_FILE)) is not None:
        return version, [f"the served head cannot be known: {folder / HEAD_FILE}: {problem}"]
    return version, []


def _instances_seen(
    rows: Sequence[InstanceRecord],
    *,
    in_progress: Path,
    areas: Mapping[str, int],
    running: Sequence[str],
    now: datetime,
) -> tuple[InstanceView, ...]:
    """Every instance with a recent heartbeat or a held lock, by name."""
    by_name = {row.name: row for row in rows}
    return tuple(
        _view(name, by_name.get(name), in_progress=in_progress, areas=areas, running=running, now=now)
        for name in sorted(set(by_name) | set(running))
    )


def _view(
    name: str,
    row: InstanceRecord | None,
    *,
    in_progress: Path,
    areas: Mapping[str, int],
    running: Sequence[str],
    now: datetime,
) -> InstanceView:
    claimed = areas.get(name)
    return InstanceView(
        name=name,
        host=row.host if row else None,
        pid=row.pid if row else None,
        running=name in running,
        state=row.state if row else None,
        stopped_cleanly=stopped_cleanly(in_progress / name),
        last_seen_s=round((now - row.last_seen_at).total_seconds(), 1) if row else None,
        claimed=claimed if claimed is not None else (row.claimed if row else 0),
        claimed_at_last_beat=row.claimed if row else None,
        frames_ok=row.frames_ok if row else None,
        frames_failed=row.frames_failed if row else None,
        frames_per_s=row.frames_per_s if row else None,
        model_version=row.model_version if row else None,
        crashes=row.crashes if row else None,
        last_crash_s=(
            round((now - row.last_crash_at).total_seconds(), 1)
            if row and row.last_crash_at is not None
            else None
        ),
    )
