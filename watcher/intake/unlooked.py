"""Files in the inbox that cannot even be looked at, and telling the operator once per folder.

A file whose lstat fails (EIO, a stale NFS handle, a folder's search permission taken away)
cannot be claimed, read or failed: it waits in the inbox, and the waiting count never falls.
The operator is told why once the folder has had such files for the readiness timeout: one line
per folder with a count, not one per frame, nor one per frame that comes into it later.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from watcher.wording import plural

logger = logging.getLogger(__name__)


@dataclass
class _Folder:
    since: float  # monotonic time since when some file of it has not been looked at, throughout
    files: int


class UnlookedFiles:
    def __init__(self, *, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._files: set[PurePosixPath] = set()
        # Kept by folder as files come and go, so that a turn's check costs a pass over the
        # folders, not over every file waiting (a camera folder shut away gathers thousands).
        self._folders: dict[PurePosixPath, _Folder] = {}
        self._said: set[PurePosixPath] = set()  # folders told of, until all their files are looked at

    def add(self, relative: PurePosixPath) -> None:
        if relative in self._files:
            return
        self._files.add(relative)
        folder = self._folders.get(relative.parent)
        if folder is None:
            self._folders[relative.parent] = _Folder(since=time.monotonic(), files=1)
        else:
            folder.files += 1

    def looked_at(self, relative: PurePosixPath) -> None:
        """Looked at after all (or gone, or claimed): no longer one of them."""
        if not self._files or relative not in self._files:
            return  # the usual case, on every frame's path: one test of an empty set
        self._files.discard(relative)
        folder = self._folders[relative.parent]
        folder.files -= 1
        if not folder.files:
            del self._folders[relative.parent]
            self._said.discard(relative.parent)  # news again, if ever

    def say(self, root: Path) -> None:
        """Warn of each folder not told of yet that has had files not looked at for the timeout.
        The reason is one file's then: a folder failing one way and then another (EIO, then
        ESTALE) is told of once, as long as none of its files could be looked at between."""
        now = time.monotonic()
        due = [
            name
            for name, folder in self._folders.items()
            if name not in self._said and now - folder.since >= self._timeout_s
        ]
        if not due:
            return
        # One file of each to name and ask why, in one pass (a stale mount: many folders at once).
        examples = {relative.parent: relative for relative in self._files}
        for name in due:
            folder, example = self._folders[name], examples[name]
            self._said.add(name)
            logger.warning(
                "cannot look at %s in %s for %.0f s (%s), %s among them: they wait in the inbox "
                "until they can be",
                plural(folder.files, "file"),
                root / name,
                now - folder.since,
                _why_not_looked_at(root / example),
                example.name,
            )


def _why_not_looked_at(path: Path) -> str:
    try:
        path.lstat()
    except OSError as error:
        return error.strerror or str(error)
    return "it can be looked at now"
