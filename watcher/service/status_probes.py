"""What `status` sees on disk: which instance locks are held, frames in each in-progress area,
frames waiting in the inbox, frames set aside as unmovable. Reads only; never takes a lock that a
daemon could be waiting for."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from watcher.intake.claim_names import is_key, parse_claimed_name
from watcher.intake.discovery import scan_inbox
from watcher.service.instance import LOCK_SUFFIX


def running_instances(in_progress: Path) -> tuple[str, ...]:
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
    return tuple(running)


def frames_per_area(in_progress: Path) -> dict[str, int]:
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


def _frames_in(area: Path) -> int | None:
    """Frames in one in-progress area (a name each, or a folder each: see
    watcher.intake.claiming), or None without the area.

    Names starting with '.' are bookkeeping (`.clean-stop`, `.attempts-<key>`, see
    watcher.intake.suspects), and anything else no claim, not frames.
    """
    try:
        with os.scandir(area) as entries:
            return sum(
                1
                for entry in entries
                if not entry.name.startswith(".")
                and (
                    (is_key(entry.name) and entry.is_dir(follow_symlinks=False))
                    or parse_claimed_name(entry.name) is not None
                )
            )
    except OSError:  # gone, or removed by its daemon while we counted
        return None


def frames_waiting(inbox: Path) -> int:
    return sum(1 for _ in scan_inbox(inbox)) if inbox.is_dir() else 0


def files_in(folder: Path) -> int:
    """Entries in a folder, bookkeeping ('.' names) aside; 0 without the folder."""
    try:
        with os.scandir(folder) as entries:
            return sum(1 for entry in entries if not entry.name.startswith("."))
    except OSError:
        return 0
