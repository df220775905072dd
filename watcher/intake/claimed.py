"""A claimed frame: what the daemon knows of a frame it took out of the inbox (see
watcher.intake.claiming for the layouts of the in-progress area).

It is made for every frame, mostly from text that crossed a file worker's pipe, on the daemon's
loop thread, which every other thread of the daemon waits on for the GIL: its paths are kept as
that text and made `Path`s only where they are used (mostly in the file workers).
"""

from __future__ import annotations

import functools
import os
from datetime import datetime
from functools import cached_property
from pathlib import Path, PurePosixPath

from watcher.frozen import frozen_when_checked
from watcher.intake.claim_names import is_claimed_name
from watcher.intake.discovery import camera_of

FLAT_NAME = "frame"
ATTEMPTS_FILE = ".attempts"

# An area's, or a camera's inbox folder's, Path parsed once, not once a frame (paths are
# immutable, so one object serves all of its frames, its hash worked out once).
_folder = functools.lru_cache(maxsize=1024)(Path)


@frozen_when_checked  # made for every frame (see watcher.frozen)
class ClaimedFrame:
    key: str
    relative: PurePosixPath  # original path, relative to the inbox
    # Where the file is while it is being worked on, as text (see work_path): a path as str(Path)
    # writes it (no `//`, `./` or trailing `/`), which equality and the layout's tests rely on.
    work_path_text: str
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
        return claimed_frame, (self.key, str(self.relative), self.work_path_text, self.received_at, source)

    @cached_property
    def work_path(self) -> Path:
        """Where the file is while it is being worked on."""
        return Path(self.work_path_text)

    @cached_property
    def in_own_folder(self) -> bool:
        """Claimed in a folder of its own (a long name, or an area from an earlier version)."""
        return not is_claimed_name(os.path.basename(self.work_path_text), self.key, self.relative)

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
        if self.key_dir is None:
            return _folder(os.path.dirname(self.work_path_text))  # one object for the area's frames
        return self.key_dir.parent

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


def claimed_frame(
    key: str, relative: PurePosixPath | str, work_path: str, received_at: datetime, source_dir: str | None
) -> ClaimedFrame:
    """A claimed frame from its fields as text (as they cross a pipe, each written by str(Path));
    `relative` may be the path the receiver already holds for it."""
    folder = _folder(source_dir) if source_dir else None
    path = relative if isinstance(relative, PurePosixPath) else PurePosixPath(relative)
    return ClaimedFrame(key, path, work_path, received_at, folder)
