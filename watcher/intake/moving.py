"""Moving finished frames to `processed/` or `failed/` without ever overwriting a file there."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import uuid
from collections.abc import Callable
from pathlib import Path

from watcher.faults import kill_point
from watcher.intake.held_folders import BY_PATH, Reach
from watcher.intake.held_lookups import Lookup
from watcher.intake.names import NAME_MAX_BYTES

# link() fails with these where hard links are impossible (another filesystem, some shares).
_NO_HARD_LINK = {errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK}
# Errors about one destination (its name, or what is in the way of it), not about the disk: the
# frame goes somewhere else, the service carries on. Anything else (a full disk, an I/O error)
# concerns every frame and is raised.
PLACEMENT_ERRORS = {
    errno.ENAMETOOLONG,
    errno.ENOTDIR,
    errno.EEXIST,
    errno.EISDIR,
    errno.EACCES,
    errno.EPERM,
    errno.ELOOP,
    errno.EINVAL,  # a name the filesystem refuses (':' or '?' on an SMB share)
    errno.EILSEQ,  # bytes a filesystem's charset cannot hold
}


def is_placement_error(error: OSError) -> bool:
    return error.errno in PLACEMENT_ERRORS


def make_folders(folder: Path, *, reach: Reach = BY_PATH) -> None:
    """`mkdir -p` without recursion: Path.mkdir(parents=True) recurses once per level, and a frame
    nested a thousand folders deep (legal: 2 bytes a level is far under PATH_MAX) would end it in
    a RecursionError. Under a held folder (`reach`), each level is made through its handle."""
    missing = []
    name = reach.name(folder)
    while not reach.is_folder(name):
        missing.append(name)
        parent = os.path.dirname(name)
        if not parent or parent == name:
            break
        name = parent
    for each in reversed(missing):
        try:
            os.mkdir(each, dir_fd=reach.fd)
        except FileExistsError:
            if not reach.is_folder(each):
                raise


def _numbered(path: Path, number: int) -> Path:
    """`x.bmp` → `x-<number>.bmp`, shortening the stem so the name still fits NAME_MAX bytes."""
    tail = f"-{number}{path.suffix}"
    room = NAME_MAX_BYTES - len(os.fsencode(tail))
    # Destination names are storable text (see watcher.intake.names): cut on a character boundary.
    return path.with_name(
        path.stem.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore") + tail
    )


def reserve_destination(wanted: str, *, taken: set[str], exists: Lookup = os.path.lexists) -> str:
    """The first free name for `wanted` (`x.bmp`, `x-1.bmp`, ...), not in `taken` and not on disk
    as `exists` looks (the commit stage's keeps the GIL: watcher.intake.held_lookups). Paths as
    text: the reservations outlive their batch, text is what rows hold, and a Path a frame was most
    of a batch's placing."""
    candidate, number = wanted, 0
    while candidate in taken or exists(candidate):
        number += 1
        # Only the name changes: the folder stays written as the caller wrote it (`./x-1.bmp`
        # and `x-1.bmp` would be two texts, and two reservations, for one file).
        candidate = os.path.join(os.path.dirname(wanted), _numbered(Path(wanted), number).name)
    taken.add(candidate)
    return candidate


def move_no_clobber(
    source: Path,
    destination: Path,
    *,
    sha256: str | None = None,
    before_numbered: Callable[[Path], None] | None = None,
    reach: Reach = BY_PATH,
) -> Path:
    """Move `source` to `destination`, or to the next free numbered name; returns where it went.
    `before_numbered` is told each numbered name before it is tried (the frame's row names
    `destination`: see watcher.intake.relocations). Names under a held output folder are made
    through its handle (`reach`: see watcher.intake.held_folders).

    Safe to repeat after an interruption: a destination that already is the source (a hard link
    made before a kill), or a complete copy of it (`sha256` matches: a cross-filesystem copy made
    before a kill), finishes the move instead of making a second file.
    """
    make_folders(destination.parent, reach=reach)
    wanted, number = destination, 0
    while True:
        if number and before_numbered is not None:
            before_numbered(destination)
        try:
            # link() refuses to replace an existing name, which rename() would silently do.
            os.link(source, reach.name(destination), dst_dir_fd=reach.fd, follow_symlinks=False)
        except FileExistsError:
            if _same_file(source, destination, reach) or _our_copy(source, destination, sha256, reach):
                # A move interrupted before its last step: finish it, do not copy again.
                os.unlink(source)
                return destination
            number += 1
            destination = _numbered(wanted, number)
            continue
        except OSError as error:
            if error.errno not in _NO_HARD_LINK:
                raise
            if reach.lexists(destination):
                if _our_copy(source, destination, sha256, reach):
                    os.unlink(source)
                    return destination
                number += 1
                destination = _numbered(wanted, number)
                continue
            # The kernel renames no more than it links across mounts (EXDEV): even two mounts
            # of one filesystem (a folder bind-mounted, as systemd's ReadWritePaths= binds each
            # folder onto itself) take a copy.
            if error.errno != errno.EXDEV and _same_filesystem(source, destination.parent, reach):
                # No hard link allowed here (a share without them, or a file the daemon neither
                # owns nor may read under fs.protected_hardlinks): a rename, checked just before.
                os.rename(source, reach.name(destination), dst_dir_fd=reach.fd)
                return destination
            if not _copy_then_link(source, destination, reach):
                number += 1
                destination = _numbered(wanted, number)
                continue
        kill_point("linked")  # both names exist: recovery must not make a second copy
        os.unlink(source)
        return destination


def _same_file(first: Path, second: Path, reach: Reach) -> bool:
    try:
        a, b = first.lstat(), reach.lstat(second)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _our_copy(source: Path, destination: Path, sha256: str | None, reach: Reach) -> bool:
    """`destination` is the copy an interrupted move of `source` made. Only a move between two
    mounts copies: on one mount a move is a link (the same file) or a rename, so an equal file
    there is another frame's (the same bytes under the same name, taken by two instances of one
    inbox), and counting it as ours would delete this frame."""
    return _copies_between(source, destination.parent, reach) and _same_content(
        source, destination, sha256, reach
    )


def _copies_between(source: Path, folder: Path, reach: Reach) -> bool:
    """A move of `source` into `folder` is a copy: they are on two filesystems, or on two mounts
    of one (a link tried between them, under a temporary name, is refused with EXDEV)."""
    if not _same_filesystem(source, folder, reach):
        return True
    probe = reach.name(folder / f".cctv-{uuid.uuid4().hex[:12]}.tmp")
    try:
        os.link(source, probe, dst_dir_fd=reach.fd, follow_symlinks=False)
    except OSError as error:
        return error.errno == errno.EXDEV
    os.unlink(probe, dir_fd=reach.fd)
    return False


def _same_content(source: Path, destination: Path, sha256: str | None, reach: Reach) -> bool:
    """`destination` is a complete copy of `source`, as its known SHA-256 says."""
    if sha256 is None:
        return False
    try:
        if source.is_symlink() or stat.S_ISLNK(reach.lstat(destination).st_mode):
            return False
        if source.stat().st_size != reach.stat(destination).st_size:
            return False
        digest = hashlib.sha256()
        with open(reach.open(destination, os.O_RDONLY), "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return False
    return digest.hexdigest() == sha256


def _copy_then_link(source: Path, destination: Path, reach: Reach) -> bool:
    """Copy across filesystems under a short temporary name (one that always fits NAME_MAX, unlike
    `.<name>.moving`), flush it, then give it the final name without replacing anything.
    False when the final name was taken meanwhile."""
    staging = reach.name(destination.with_name(f".cctv-{uuid.uuid4().hex[:12]}.tmp"))
    final, fd = reach.name(destination), reach.fd
    try:
        info = source.lstat()
        if stat.S_ISLNK(info.st_mode):
            os.symlink(os.readlink(source), staging, dir_fd=fd)
        elif stat.S_ISREG(info.st_mode):
            _copy_file(source, staging, reach)
        else:
            _copy_node(info, staging, reach)
        try:
            os.link(staging, final, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
        except FileExistsError:
            return False
        except OSError as error:
            if error.errno not in _NO_HARD_LINK:
                raise
            if reach.lexists(final):
                return False
            os.rename(staging, final, src_dir_fd=fd, dst_dir_fd=fd)  # no hard links here: a checked rename
        return True
    finally:
        try:
            os.unlink(staging, dir_fd=fd)
        except FileNotFoundError:
            pass


def _same_filesystem(source: Path, folder: Path, reach: Reach) -> bool:
    try:
        return source.lstat().st_dev == reach.stat(folder).st_dev
    except OSError:
        return False


def _copy_node(info: os.stat_result, staging: str, reach: Reach) -> None:
    """A FIFO, socket or device is never opened (a FIFO would block, a device never end): the node
    itself is made again on the other side, or an empty file stands for it where that is refused
    (a device without CAP_MKNOD)."""
    try:
        os.mknod(staging, stat.S_IFMT(info.st_mode) | 0o600, info.st_rdev, dir_fd=reach.fd)
    except PermissionError:
        os.close(reach.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL))


def _copy_file(source: Path, staging: str, reach: Reach) -> None:
    with (
        source.open("rb") as reader,
        open(reach.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb") as writer,
    ):
        while chunk := reader.read(1 << 20):
            writer.write(chunk)
        writer.flush()
        info = os.fstat(reader.fileno())
        os.utime(writer.fileno(), ns=(info.st_atime_ns, info.st_mtime_ns))
        os.fsync(writer.fileno())
