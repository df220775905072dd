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
import logging
import os
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from watcher.intake.claim_names import claimed_name, inside_inbox, is_key, parse_claimed_name
from watcher.intake.claimed import ATTEMPTS_FILE, FLAT_NAME, ClaimedFrame
from watcher.intake.moving import make_folders
from watcher.intake.source_folders import Source, SourceFolders

logger = logging.getLogger(__name__)

SOURCE_FILE = ".source"
# Deeper paths are claimed flat too: Python 3.11's rglob and rmtree recurse once per level.
MAX_NESTED_PARTS = 32
# The longest directory entry on Linux's local filesystems (ext4, XFS, btrfs, tmpfs).
NAME_MAX = 255


class ClaimRefused(Exception):
    """The frame cannot be taken out of the inbox (its folder is not writable for the daemon, say);
    it stays where it is, untouched, and the message says why."""


def claim(
    inbox: Path, area: Path, relative: PurePosixPath, *, folders: SourceFolders | None = None
) -> ClaimedFrame | None:
    """Move one frame into this instance's in-progress area; None if it vanished (or another
    instance claimed it) first, or a folder on its way below the inbox is a link now; ClaimRefused
    when the filesystem will not let it go. `folders`: the folders of `inbox` already opened for a
    share's claims (see watcher.intake.source_folders), else the frame's own is opened and closed
    here."""
    key = uuid.uuid4().hex
    try:
        with SourceFolders(inbox) if folders is None else contextlib.nullcontext(folders) as opened:
            work_path = _claim(opened.source(relative), area, key, relative)
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
        work_path_text=str(work_path),
        received_at=datetime.now(UTC),
        source_dir=(inbox / relative).parent,
    )


def _claim(source: Source, area: Path, key: str, relative: PurePosixPath) -> Path:
    name = claimed_name(key, relative)
    if len(name) <= NAME_MAX:
        work_path = area / os.fsdecode(name)
        try:
            # rename() moves a symlink or special file itself, never what it points to.
            os.rename(source.name, work_path, src_dir_fd=source.folder)
            return work_path
        except FileNotFoundError:
            if area.is_dir():
                raise  # the frame is gone
            make_folders(area)  # the area itself is gone: made again, as at start
            os.rename(source.name, work_path, src_dir_fd=source.folder)
            return work_path
        except OSError as error:
            # A filesystem with a shorter NAME_MAX (some FUSE ones say EINVAL): a folder of its own.
            if error.errno not in (errno.ENAMETOOLONG, errno.EINVAL):
                raise
    if len(relative.parts) > MAX_NESTED_PARTS:
        return _claim_flat(source, area, key, relative)
    try:
        return _claim_nested(source, area, key, relative)
    except OSError as error:
        if error.errno != errno.ENAMETOOLONG:
            raise
        shutil.rmtree(area / key, ignore_errors=True)
        return _claim_flat(source, area, key, relative)


def _claim_nested(source: Source, area: Path, key: str, relative: PurePosixPath) -> Path:
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
    os.rename(source.name, work_path, src_dir_fd=source.folder)
    return work_path


def _claim_flat(source: Source, area: Path, key: str, relative: PurePosixPath) -> Path:
    key_dir = area / key
    key_dir.mkdir()
    # Written (and flushed) before the rename: recovery must always know where the frame came from.
    with (key_dir / SOURCE_FILE).open("wb") as handle:
        handle.write(os.fsencode(str(relative)))
        handle.flush()
        os.fsync(handle.fileno())
    work_path = key_dir / FLAT_NAME
    os.rename(source.name, work_path, src_dir_fd=source.folder)
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
            frames.append(
                ClaimedFrame(key=key, relative=relative, work_path_text=str(entry), received_at=received)
            )
            keys.add(key)
        elif is_key(entry.name) and entry.is_dir() and not entry.is_symlink():
            # A claim in a folder of its own, named by its key (any other folder was put there by
            # hand: taken for a claim, its files would be moved out, or it removed when empty).
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
                key=key_dir.name,
                relative=relative,
                work_path_text=str(key_dir / FLAT_NAME),
                received_at=received,
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
            work_path_text=str(work_path),
            received_at=received,
        )
        for work_path in files
    ]
