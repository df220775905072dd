"""The folder a frame is claimed from, opened below the inbox one level at a time, never through a link.

The scan never follows a link to a folder (watcher.intake.discovery), but between the scan and the
claim a camera folder can be swapped for a link, and a rename by path follows links in the folders
it walks: `cam-07/x.bmp` would then be taken from wherever `cam-07` points on the same filesystem,
a file outside the inbox claimed, recorded and moved as a frame. The claim's rename starts instead
from the frame's own folder as opened here, each level with O_NOFOLLOW: a level that is a link now
(or a file) counts as the frame being gone, and nothing outside the inbox is renamed. The inbox
itself is the operator's choice of path, links and all. (The readiness look before the claim reads
a header by path, links followed: it only decides when to claim.)
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import NamedTuple

from watcher.intake.claim_names import inside_inbox

logger = logging.getLogger(__name__)

# Folders kept open at once by one share's claims: a share of frames from as many folders must not
# run a worker out of file descriptors (the oldest is closed first).
KEPT_OPEN = 64

# A path handle: no read permission needed on the folder, nothing read, only a place to start
# from (Linux); elsewhere a plain read-only open of the folder.
_OPEN_INBOX = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC
_OPEN_LEVEL = _OPEN_INBOX | os.O_NOFOLLOW
# What opening a level with O_NOFOLLOW and O_DIRECTORY says when it is a link or a file now.
_NOT_A_FOLDER = (errno.ELOOP, errno.ENOTDIR)


class FolderReplaced(FileNotFoundError):
    """A folder on the frame's way below the inbox is a link or a file now: as far as the inbox
    goes, the frame is gone."""


class Source(NamedTuple):
    """Where a claim's rename starts: `name` in the folder open as `folder` (None: `name` is a
    path, for a frame directly in the inbox)."""

    folder: int | None
    name: str


class SourceFolders:
    """Folders below the inbox opened for claims, each kept open for the claims of one file
    process's share (a folder's frames come together; a share takes milliseconds), all closed when
    it ends. A folder swapped for a link after it was opened is not followed: the share's claims go
    on in the folder that was opened. Kept no longer than that: a folder moved away and made again
    later must be found anew (see watcher.pipeline.claims)."""

    def __init__(self, inbox: Path) -> None:
        self.inbox = inbox
        self._open: dict[PurePosixPath, int] = {}
        self._replaced: set[PurePosixPath] = set()  # said once a share, not once a frame

    def source(self, relative: PurePosixPath) -> Source:
        """Where the rename of the frame at `relative` starts; FileNotFoundError when a folder on its
        way is gone, FolderReplaced when one is a link or a file now."""
        if not inside_inbox(relative):
            # Never what a scan or an event gives ('..', absolute, hidden): nothing to take.
            raise FileNotFoundError(errno.ENOENT, f"{relative} is not a path inside the inbox")
        folder = relative.parent
        if not folder.parts:
            return Source(None, os.path.join(self.inbox, relative))
        opened = self._open.get(folder)
        if opened is None:
            if folder in self._replaced:
                raise FolderReplaced(errno.ENOENT, f"{folder} is not a folder of the inbox any more")
            try:
                opened = self._opened(folder)
            except FolderReplaced:
                self._replaced.add(folder)
                raise
            if len(self._open) >= KEPT_OPEN:
                os.close(self._open.pop(next(iter(self._open))))
            self._open[folder] = opened
        return Source(opened, relative.name)

    def _opened(self, folder: PurePosixPath) -> int:
        handle = os.open(self.inbox, _OPEN_INBOX)
        try:
            for level, part in enumerate(folder.parts):
                try:
                    inner = os.open(part, _OPEN_LEVEL, dir_fd=handle)
                except OSError as error:
                    if error.errno not in _NOT_A_FOLDER:
                        raise
                    replaced = PurePosixPath(*folder.parts[: level + 1])
                    logger.warning(
                        "%s in the inbox is not a folder any more (a link or a file now): "
                        "frames are not taken through it",
                        replaced,
                    )
                    raise FolderReplaced(errno.ENOENT, f"{replaced} is a link or a file now") from None
                os.close(handle)
                handle = inner
        except BaseException:
            os.close(handle)
            raise
        return handle

    def close(self) -> None:
        for handle in self._open.values():
            os.close(handle)
        self._open.clear()

    def __enter__(self) -> SourceFolders:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
