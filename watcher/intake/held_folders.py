"""An output folder held open through a batch's moves, so that none of them lands on another disk.

A batch's moves wait while `processed/` or `failed/` is away (watcher.pipeline.recording looks
once a batch, before its moves). A share lazily unmounted from one of them in the middle of the
moves (`umount -l`, which succeeds while files are open there) leaves its mount point behind, an
empty folder on the local disk: moved by their paths, the rest of the batch's frames would go
there, hidden once the share is back, their rows naming the share's files. So a batch's moves
reach their folder through a handle (a directory file descriptor) opened on the folder the look
saw, its device and inode compared: every name under it is made relative to the handle, on that
folder whatever its path leads to meanwhile. Before each move the path is looked at again: led
elsewhere, the batch stops and waits, as one whose folder was away at its look (a frame moved in
between went through the handle, onto the share).

A destination not under the folder (a row written by another configuration) is reached by its
path, as every name is without a handle (BY_PATH).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from watcher.intake.durability import fsync_dir
from watcher.intake.site_mounts import Identity, identity_of


class Reach:
    """How names under `root` are reached: through `fd`, a handle on it, or by their paths."""

    def __init__(
        self, root: Path | None = None, fd: int | None = None, identity: Identity | None = None
    ) -> None:
        self.root, self.fd, self.identity = root, fd, identity
        text = str(root) if root is not None else ""
        self._root_text = text.rstrip("/") or "/"
        self._prefix = text if text.endswith("/") else f"{text}/"

    @classmethod
    def held(cls, root: Path, identity: Identity) -> Reach | None:
        """A handle on `root` if its path leads to the folder `identity` names (what the batch's
        look saw); None if it does not now."""
        try:
            fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if identity_of(os.fstat(fd)) != identity:
            os.close(fd)
            return None
        return cls(root, fd, identity)

    def leads_here(self) -> bool:
        """`root`'s path still leads to the folder held (always true without a handle)."""
        if self.identity is None:
            return True
        try:
            return identity_of(os.stat(self._root_text)) == self.identity
        except OSError:
            return False

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def name(self, path: Path | str) -> str:
        """`path` relative to the handle; as it is without one, or when it is not under `root`."""
        text = os.fspath(path)
        if self.fd is None:
            return text
        if text.startswith(self._prefix) and len(text) > len(self._prefix):
            return text[len(self._prefix) :]
        return "." if text == self._root_text else text

    def under(self, path: Path | str) -> bool:
        """`path` is reached through the handle."""
        return self.fd is not None and not os.path.isabs(self.name(path))

    def lstat(self, path: Path | str) -> os.stat_result:
        return os.stat(self.name(path), dir_fd=self.fd, follow_symlinks=False)

    def stat(self, path: Path | str) -> os.stat_result:
        return os.stat(self.name(path), dir_fd=self.fd)

    def lexists(self, path: Path | str) -> bool:
        try:
            self.lstat(path)
        except OSError:
            return False
        return True

    def is_folder(self, path: Path | str) -> bool:
        try:
            return stat.S_ISDIR(self.stat(path).st_mode)
        except OSError:
            return False

    def open(self, path: Path | str, flags: int, mode: int = 0o666) -> int:
        return os.open(self.name(path), flags, mode, dir_fd=self.fd)


BY_PATH = Reach()


class HeldFolders:
    """The output folders of one batch's moves, each held from its first move into it to the end."""

    def __init__(self) -> None:
        self._held: dict[Path, Reach] = {}

    def __enter__(self) -> HeldFolders:
        return self

    def __exit__(self, *_: object) -> None:
        for reach in self._held.values():
            reach.close()

    def reach(self, root: Path, identity: Identity) -> Reach | None:
        """`root` held, if its path leads (still) to the folder `identity` names; None if not."""
        reach = self._held.get(root)
        if reach is None:
            reach = Reach.held(root, identity)
            if reach is not None:
                self._held[root] = reach
            return reach
        return reach if reach.leads_here() else None

    def fsync(self, folders: Iterable[Path]) -> None:
        """Flush these folders' entries (durability.fsync_dir), each through its output folder's
        handle when it is under one."""
        for folder in sorted(set(folders)):
            reach = next((reach for reach in self._held.values() if reach.under(folder)), BY_PATH)
            fsync_dir(Path(reach.name(folder)), dir_fd=reach.fd)
