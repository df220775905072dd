"""An archive of exported frames: which files count (the inbox's rules), what each one's row is
identified by, and which are already done. Nothing here writes to the archive."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from watcher.intake.discovery import scan_inbox
from watcher.intake.names import storable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchiveFile:
    relative: PurePosixPath  # below the archive folder; the first folder is the camera
    path: Path
    size: int
    mtime: datetime


def archive_source(archive: Path) -> str:
    """The rows' `source`: the archive's folder as the filesystem names it."""
    return f"archive:{storable(str(archive.resolve()))}"


def list_archive(
    archive: Path, *, since: datetime | None = None, until: datetime | None = None
) -> Iterator[ArchiveFile]:
    """Every frame under `archive` (`*.bmp` in any case; hidden and temporary names, and hidden
    folders, skipped; folder links not followed), by file time within [since, until)."""
    for relative in scan_inbox(archive):
        path = archive / relative
        try:
            info = path.lstat()
            mtime = datetime.fromtimestamp(info.st_mtime, UTC)
        except OSError as error:  # gone since the folder was listed
            logger.warning("cannot look at %s: %s", path, error)
            continue
        except (ValueError, OverflowError) as error:  # outside the years 1-9999 (tmpfs, XFS, a NAS)
            logger.warning("left out %s: its file time cannot be read as a date (%s)", path, error)
            continue
        if (since is not None and mtime < since) or (until is not None and mtime >= until):
            continue
        yield ArchiveFile(relative, path, info.st_size, mtime)


def archive_frame_key(source: str, relative: PurePosixPath, *, sha256: str | None, file: ArchiveFile) -> str:
    """The row's identity: the archive, the path in it and the content. A rerun finds the same key
    (ON CONFLICT DO NOTHING); a file rewritten with new content is a new frame. A file that could
    not be read is identified by its size and time instead."""
    content = sha256 or f"unread {file.size} {file.mtime.timestamp()}"
    identity = "\0".join((source, relative.as_posix(), content))
    return hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def is_done(
    file: ArchiveFile, done: dict[str, list[tuple[int | None, datetime | None]]], *, stored_name: str
) -> bool:
    """An `ok` row for this path with the same size and file time exists: skip it without reading.
    (A failed one is tried again: the failure may have been the model's, or the file half written.)"""
    return any(
        size == file.size and mtime is not None and abs((mtime - file.mtime).total_seconds()) < 1e-3
        for size, mtime in done.get(stored_name, ())
    )
