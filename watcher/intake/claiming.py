"""Taking a frame out of the inbox by one atomic rename into the in-progress area.

    <inbox>/cam-07/x.bmp  →  <inbox>/.in-progress/<instance>/<frame key>=cam-07%2Fx.bmp

The name starts with the frame's key (committed with its row, so a frame re-processed after a
crash is recognised); after the '=' comes its inbox-relative path with '%' written '%25' and '/'
written '%2F', so recovery reads the path back from the name alone. A claim is then one rename and
nothing else: no folder to make, flush and remove per frame (each of those cost as much CPU as
reading the frame; see bench/file_cpu.py).

A name too long for one directory entry (NAME_MAX) is claimed in a folder of its own, the frame's
inbox-relative path kept below it; and one whose path is too long for that (the area adds about
60 bytes to a path that may be near PATH_MAX), or nested deeper than MAX_NESTED_PARTS, is claimed
flat, with its inbox path written beside it first:

    <inbox>/.in-progress/<instance>/<frame key>/cam-07/x.bmp   the folder layout
    <inbox>/.in-progress/<instance>/<frame key>/frame          the flat layout: the file
    <inbox>/.in-progress/<instance>/<frame key>/.source        its inbox-relative path (raw bytes)

Areas left by earlier versions (every claim a folder) are recovered as they are. Names starting
with '.' are bookkeeping, never frames (the inbox never yields such names): `.source` above, and a
frame's count of crashes (see watcher.intake.suspects), `.attempts` in its folder or
`.attempts-<key>` beside a claim without one.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path, PurePosixPath

from watcher.intake.claim_names import claimed_name, inside_inbox, is_claimed_name, parse_claimed_name
from watcher.intake.discovery import camera_of
from watcher.intake.moving import make_folders

logger = logging.getLogger(__name__)

SOURCE_FILE = ".source"
FLAT_NAME = "frame"
ATTEMPTS_FILE = ".attempts"
# Deeper paths are claimed flat too: Python 3.11's rglob and rmtree recurse once per level.
MAX_NESTED_PARTS = 32
# The longest directory entry on Linux's local filesystems (ext4, XFS, btrfs, tmpfs).
NAME_MAX = 255


class ClaimRefused(Exception):
    """The frame cannot be taken out of the inbox (its folder is not writable for the daemon, say);
    it stays where it is, untouched, and the message says why."""


@dataclass(frozen=True)
class ClaimedFrame:
    key: str
    relative: PurePosixPath  # original path, relative to the inbox
    work_path: Path  # where the file is while it is being worked on
    received_at: datetime
    # The inbox folder the frame was renamed out of (unknown for frames recovered at start).
    source_dir: Path | None = None

    @property
    def camera(self) -> str | None:
        return camera_of(self.relative)

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        # Sent to and from the file processes for every frame: its paths as text rebuild in half
        # the time of pathlib's own pickling (part by part), and the cached layout is not sent.
        source = str(self.source_dir) if self.source_dir is not None else None
        return claimed_frame, (self.key, str(self.relative), str(self.work_path), self.received_at, source)

    @cached_property
    def in_own_folder(self) -> bool:
        """Claimed in a folder of its own (a long name, or an area from an earlier version)."""
        return not is_claimed_name(self.work_path.name, self.key, self.relative)

    @cached_property
    def key_dir(self) -> Path | None:
        """The claim's own folder; None for a claim that is one name in the area."""
        if not self.in_own_folder:
            return None
        if self.work_path.name == FLAT_NAME and self.work_path.parent.name == self.key:
            return self.work_path.parent  # claimed flat (a frame named `frame` is not, deeper down)
        return self.work_path.parents[len(self.relative.parts) - 1]

    @property
    def area(self) -> Path:
        """The in-progress area holding the claim."""
        return self.work_path.parent if self.key_dir is None else self.key_dir.parent

    @property
    def attempts_path(self) -> Path:
        """Where the frame's count of crashes is kept (see watcher.intake.suspects)."""
        if self.key_dir is None:
            return self.area / f"{ATTEMPTS_FILE}-{self.key}"
        return self.key_dir / ATTEMPTS_FILE

    @property
    def claim_dirs(self) -> list[Path]:
        """Every directory whose entries the claim changed (what must be flushed to make it
        durable): its own folders if it has them, the area, and the inbox folder it left."""
        inside = []
        if self.key_dir is not None:
            for folder in self.work_path.parents:
                inside.append(folder)
                if folder == self.key_dir:
                    break
        return [*inside, self.area, *([self.source_dir] if self.source_dir else [])]


# A camera's frames all come from one inbox folder: its Path is parsed once, not once a frame
# (paths are immutable, so one object serves them all).
_folder = functools.lru_cache(maxsize=1024)(Path)


def claimed_frame(
    key: str, relative: PurePosixPath | str, work_path: str, received_at: datetime, source_dir: str | None
) -> ClaimedFrame:
    """A claimed frame from its fields as text (as they cross a pipe); `relative` may be the path
    the receiver already holds for it."""
    folder = _folder(source_dir) if source_dir else None
    path = relative if isinstance(relative, PurePosixPath) else PurePosixPath(relative)
    return ClaimedFrame(key, path, Path(work_path), received_at, folder)


def claim(inbox: Path, area: Path, relative: PurePosixPath) -> ClaimedFrame | None:
    """Move one frame into this instance's in-progress area; None if it vanished (or another
    instance claimed it) first; ClaimRefused when the filesystem will not let it go."""
    key = uuid.uuid4().hex
    try:
        work_path = _claim(inbox, area, key, relative)
    except FileNotFoundError:
        shutil.rmtree(area / key, ignore_errors=True)
        logger.debug("%s vanished before it could be claimed", relative)
        return None
    except OSError as error:
        shutil.rmtree(area / key, ignore_errors=True)
        raise ClaimRefused(f"cannot take it out of the inbox: {error.strerror or error}") from None
    return ClaimedFrame(
        key=key,
        relative=relative,
        work_path=work_path,
        received_at=datetime.now(UTC),
        source_dir=(inbox / relative).parent,
    )


def _claim(inbox: Path, area: Path, key: str, relative: PurePosixPath) -> Path:
    name = claimed_name(key, relative)
    if len(name) <= NAME_MAX:
        work_path = area / os.fsdecode(name)
        try:
            # rename() moves a symlink or special file itself, never what it points to.
            os.rename(inbox / relative, work_path)
            return work_path
        except FileNotFoundError:
            if area.is_dir():
                raise  # the frame is gone
            make_folders(area)  # the area itself is gone: made again, as at start
            os.rename(inbox / relative, work_path)
            return work_path
        except OSError as error:
            # A filesystem with a shorter NAME_MAX (some FUSE ones say EINVAL): a folder of its own.
            if error.errno not in (errno.ENAMETOOLONG, errno.EINVAL):
                raise
    if len(relative.parts) > MAX_NESTED_PARTS:
        return _claim_flat(inbox, area, key, relative)
    try:
        return _claim_nested(inbox, area, key, relative)
    except OSError as error:
        if error.errno != errno.ENAMETOOLONG:
            raise
        shutil.rmtree(area / key, ignore_errors=True)
        return _claim_flat(inbox, area, key, relative)


def _claim_nested(inbox: Path, area: Path, key: str, relative: PurePosixPath) -> Path:
    work_path = area / key / relative
    try:
        # The key is new: its folders are made top down, one mkdir each, without looking first.
        folder = os.path.join(area, key)
        os.mkdir(folder)
        for part in relative.parts[:-1]:
            folder = os.path.join(folder, part)
            os.mkdir(folder)
    except FileNotFoundError:
        make_folders(work_path.parent)  # the area itself is gone: made again, as at start
    os.rename(inbox / relative, work_path)
    return work_path


def _claim_flat(inbox: Path, area: Path, key: str, relative: PurePosixPath) -> Path:
    key_dir = area / key
    key_dir.mkdir()
    # Written (and flushed) before the rename: recovery must always know where the frame came from.
    with (key_dir / SOURCE_FILE).open("wb") as handle:
        handle.write(os.fsencode(str(relative)))
        handle.flush()
        os.fsync(handle.fileno())
    work_path = key_dir / FLAT_NAME
    os.rename(inbox / relative, work_path)
    return work_path


def release(frame: ClaimedFrame) -> None:
    """Remove what is left of the claim once its frame has moved out: its (now empty) folder,
    or its count of crashes if it has one."""
    if frame.key_dir is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(frame.attempts_path)  # one lookup; only a suspect ever has the file
        return
    if frame.key_dir.name != frame.key:
        # Never the case for a claim this module made or read back; removing anything but the
        # claim's own folder could take the inbox with it, so nothing is removed.
        logger.error("claim %s of %s is not in its own folder: left as it is", frame.key, frame.relative)
        return
    # The folders are known and empty: removing them one by one is a syscall each, where
    # rmtree's safe walk opens and lists every level (a tenth of a frame's file handling).
    folder = frame.work_path.parent
    try:
        while True:
            os.rmdir(folder)
            if folder == frame.key_dir:
                return
            folder = folder.parent
    except FileNotFoundError:
        if folder != frame.key_dir:
            shutil.rmtree(frame.key_dir, ignore_errors=True)
    except OSError:
        # Not empty (something else landed there) or not removable: the thorough way.
        shutil.rmtree(frame.key_dir, ignore_errors=True)


def claimed_frames(area: Path) -> list[ClaimedFrame]:
    """Frames an instance left in its in-progress area, for recovery."""
    frames: list[ClaimedFrame] = []
    if not area.is_dir():
        return frames
    keys: set[str] = set()
    entries = sorted(area.iterdir())
    for entry in entries:
        if entry.name.startswith("."):
            continue  # bookkeeping of the area (see watcher.intake.suspects), not a claim
        parsed = parse_claimed_name(entry.name)
        if parsed is not None and (entry.is_symlink() or not entry.is_dir()):
            key, relative = parsed
            # The rename that claimed it set its ctime: when it was received, near enough.
            received = datetime.fromtimestamp(entry.lstat().st_ctime, UTC)
            frames.append(ClaimedFrame(key=key, relative=relative, work_path=entry, received_at=received))
            keys.add(key)
        elif entry.is_dir() and not entry.is_symlink():  # a claim in a folder of its own
            frames += _claimed_in_folder(entry)
        else:
            logger.warning("%s is no claim (not a name the daemon writes): left where it is", entry)
    prefix = f"{ATTEMPTS_FILE}-"
    for entry in entries:
        if entry.name.startswith(prefix) and entry.name.removeprefix(prefix) not in keys:
            # The count of a frame that moved out before a crash let its claim be released.
            with contextlib.suppress(OSError):
                entry.unlink()
    return frames


def _claimed_in_folder(key_dir: Path) -> list[ClaimedFrame]:
    received = datetime.fromtimestamp(key_dir.lstat().st_mtime, UTC)
    source = key_dir / SOURCE_FILE
    if source.is_file() and (key_dir / FLAT_NAME).exists():
        relative = PurePosixPath(os.fsdecode(source.read_bytes()))
        if not inside_inbox(relative):
            logger.warning("%s names no inbox path: %s left where it is", source, key_dir)
            return []
        return [
            ClaimedFrame(
                key=key_dir.name, relative=relative, work_path=key_dir / FLAT_NAME, received_at=received
            )
        ]
    files = [
        path
        for path in key_dir.rglob("*")
        if (not path.is_dir() or path.is_symlink()) and not path.relative_to(key_dir).parts[0].startswith(".")
    ]
    if not files:
        shutil.rmtree(key_dir, ignore_errors=True)
    return [
        ClaimedFrame(
            key=key_dir.name,
            relative=PurePosixPath(work_path.relative_to(key_dir).as_posix()),
            work_path=work_path,
            received_at=received,
        )
        for work_path in files
    ]
