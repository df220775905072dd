"""An archive of exported frames: which files count (the inbox's rules), what each one's row is
identified by, and which are already done. Nothing here writes to the archive.

The listing streams: files are looked up in the database a chunk at a time and handed on as they
are found, so an archive of millions of frames never sits in memory as a list.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path, PurePosixPath

from watcher.intake.discovery import scan_inbox
from watcher.intake.names import storable

logger = logging.getLogger(__name__)

# Files looked up in the database at a time: one indexed query (source, source_path) each, its
# paths bound one parameter each (under the 999 an SQLite before 3.32 allows).
LOOKUP_CHUNK = 500
# A stored path → every (size, file time) its `ok` rows were classified with.
DoneRows = dict[str, list[tuple[int | None, datetime | None]]]


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


def is_done(file: ArchiveFile, done: DoneRows, *, stored_name: str) -> bool:
    """An `ok` row for this path with the same size and file time exists: skip it without reading.
    (A failed one is tried again: the failure may have been the model's, or the file half written.)"""
    return any(
        size == file.size and mtime is not None and abs((mtime - file.mtime).total_seconds()) < 1e-3
        for size, mtime in done.get(stored_name, ())
    )


@dataclass
class ListingCounts:
    files: int = 0  # listed so far (within --since/--until)
    done: int = 0  # of them, skipped as already done


def not_done(
    files: Iterable[ArchiveFile], done_rows: Callable[[list[str]], DoneRows], *, counts: ListingCounts
) -> Iterator[ArchiveFile]:
    """The files with no `ok` row yet (is_done), in the listing's order, as it goes: `done_rows`
    gives the rows of a chunk's stored paths, and `counts` grows as the files pass."""
    listed = iter(files)
    while chunk := list(islice(listed, LOOKUP_CHUNK)):
        names = [storable(file.relative.as_posix()) for file in chunk]
        done = done_rows(names)
        for file, name in zip(chunk, names, strict=True):
            counts.files += 1
            if is_done(file, done, stored_name=name):
                counts.done += 1
            else:
                yield file


def batches(files: Iterable[ArchiveFile], *, size: int) -> Iterator[list[ArchiveFile]]:
    """The files `size` at a time, in order, taken from the listing only as each batch is asked for."""
    listed = iter(files)
    while batch := list(islice(listed, size)):
        yield batch
