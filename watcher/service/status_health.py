"""The rules that make `status` unhealthy, one line per problem saying why."""

from __future__ import annotations

import stat
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from watcher.intake.folder_mounts import MountChange
from watcher.service.heartbeat import HEARTBEAT_INTERVAL_S
from watcher.service.status_report import RECENTLY, InstanceView
from watcher.wording import plural

# A running instance that holds frames and has not beaten for this long is frozen.
FROZEN_AFTER = timedelta(seconds=3 * HEARTBEAT_INTERVAL_S)


def instance_state(item: InstanceView) -> str:
    if item.running:
        return "running"
    # Its lock is free: it stopped cleanly, or it died without saying so (its frames are adopted).
    return "stopped" if item.state == "stopped" or item.stopped_cleanly else "gone"


def inbox_problems(
    *,
    waiting: int,
    running: bool,
    started_at: datetime | None,
    last_processed_at: datetime | None,
    now: datetime,
    stall_after_s: float,
) -> list[str]:
    """Frames waiting with no daemon, or with daemons that processed nothing for too long.

    `started_at` is when the earliest running daemon started (None: none says).
    """
    if not waiting:
        return []
    if not running:
        return [f"{plural(waiting, 'frame')} waiting and no daemon running"]
    started = started_at or now
    idle_since = max(last_processed_at, started) if last_processed_at else started
    idle_s = (now - idle_since).total_seconds()
    if idle_s <= stall_after_s:
        return []
    return [
        f"{plural(waiting, 'frame')} waiting and nothing processed for {idle_s:.0f} s "
        f"(status.stall_after_s = {stall_after_s:g})"
    ]


def folder_problems(
    folders: Mapping[str, Path], *, made_once: bool, moved: Sequence[MountChange] = ()
) -> list[str]:
    """A folder (`paths.inbox`, say) that is not a folder, or that is gone after `watch` made them
    all once (an unmounted share: no frame can arrive or leave, and a daemon does not start on
    it, watcher.intake.folders). Before that first start a missing one is simply not made yet.
    `moved`: those on another mount than `watch` recorded (an unmounted share's mount point, an
    empty folder on the local disk: a daemon does not start on it either)."""
    problems = [
        f"{change.described()} (an unmounted share?); `watch` will not start on it" for change in moved
    ]
    for key, folder in folders.items():
        try:
            is_folder = stat.S_ISDIR(folder.stat().st_mode)
        except (FileNotFoundError, NotADirectoryError):
            if made_once:
                problems.append(
                    f"{key} {folder}: is missing (an unmounted share?); `watch` will not make it again"
                )
            continue
        except PermissionError:
            continue  # a folder on its way that whoever runs status may not enter: not known here
        except OSError as error:  # a stale NFS handle, say
            problems.append(f"{key} {folder}: cannot be looked at: {error.strerror or error}")
            continue
        if not is_folder:
            problems.append(f"{key} {folder}: is not a folder")
    return problems


def instance_problems(
    seen: Sequence[InstanceView], *, areas: Mapping[str, int], running: Sequence[str]
) -> list[str]:
    """What is wrong with the instances, one line each."""
    problems = []
    # Counted before the locks were looked at: an instance that started meanwhile holds its own.
    for name, frames in areas.items():
        if frames and name not in running:
            problems.append(
                f"{plural(frames, 'frame')} in progress in the area of instance {name}, "
                "which no live instance holds (its lock is free)"
            )
    for item in seen:
        problems += _problems_of(item)
    return problems


def _problems_of(item: InstanceView) -> list[str]:
    problems = []
    silent_s = item.last_seen_s
    if item.running and item.state == "running" and silent_s is not None:
        holds = max(item.claimed or 0, item.claimed_at_last_beat or 0)
        if holds and silent_s > FROZEN_AFTER.total_seconds():
            problems.append(
                f"instance {item.name} holds {plural(holds, 'frame')} but its last heartbeat was "
                f"{silent_s:.0f} s ago (more than {FROZEN_AFTER.total_seconds():.0f} s): frozen"
            )
    if instance_state(item) == "gone":
        problems.append(
            f"instance {item.name} died without stopping (last seen {_seconds(item.last_seen_s)} s ago)"
        )
    crashed_s = item.last_crash_s
    if crashed_s is not None and crashed_s <= RECENTLY.total_seconds():
        crashes = plural(item.crashes or 0, "crash")
        problems.append(f"instance {item.name} crashed {crashed_s:.0f} s ago ({crashes} so far)")
    return problems


def set_aside_problems(count: int, *, folder: Path) -> list[str]:
    if not count:
        return []
    return [
        f"{plural(count, 'frame')} could not be moved to processed/ or failed/ and wait in "
        f"{folder} (their rows say so; see the daemon's log)"
    ]


def _seconds(value: float | None) -> str:
    # An instance is gone only when its row exists, so this has a value; "?" keeps it total.
    return "?" if value is None else f"{value:.0f}"
