"""A frame file named by the database (`stored_path`): handed out only from processed/ or failed/.

`stored_path` comes from the database, which anyone who can write to it (or a bug) could point
anywhere: `/etc/shadow`, `../../`. The real path (symlinks followed) must lie inside one of the
two folders frames are moved to, or nothing is read. The web app's pictures and `dataset export`
both go through here.
"""

from __future__ import annotations

from pathlib import Path


class FrameRefused(Exception):
    """The stored path is not absolute, or lies outside processed/ and failed/."""


class FrameGone(Exception):
    """The frame file is no longer there (deleted, or on a share that is not mounted)."""


def frame_roots(*folders: Path) -> tuple[Path, ...]:
    """The folders, as their real paths (a symlinked processed/ still matches its files)."""
    return tuple(folder.resolve() for folder in folders)


def frame_file(stored_path: str, *, roots: tuple[Path, ...]) -> Path:
    if not Path(stored_path).is_absolute() or "\0" in stored_path:
        raise FrameRefused(stored_path)  # the daemon stores absolute paths only; NUL is no path
    try:
        real = Path(stored_path).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        raise FrameRefused(stored_path) from None
    if not any(real.is_relative_to(root) for root in roots):
        raise FrameRefused(stored_path)
    if not real.is_file():
        raise FrameGone(stored_path)
    return real
