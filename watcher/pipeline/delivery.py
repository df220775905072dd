"""Stage four: committed frames' files moved to where their rows say, then their claims released.

The same steps finish a batch and finish what a crash left between commit and move (recovery),
so a frame is moved the same way whichever of the two gets to it.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from watcher.faults import kill_point
from watcher.intake.claiming import release
from watcher.intake.durability import fsync_dirs
from watcher.intake.placement import move_frame
from watcher.pipeline.recording import check_output_folders
from watcher.pipeline.stages import OutputFolders, Stored
from watcher.store import writes


class Deliverer:
    def __init__(self, engine: Engine, folders: OutputFolders) -> None:
        self._engine = engine
        self._folders = folders

    def deliver(self, stored: list[Stored]) -> None:
        check_output_folders(self._folders)
        relocated: dict[str, str] = {}  # frame key → where the file went instead
        for item in stored:
            record = item.record
            final = move_frame(
                item.frame,
                Path(record.stored_path),
                root=self._folders.for_status(record.status),
                sha256=record.sha256,
            )
            if str(final) != record.stored_path:
                # Something took the reserved name between commit and move.
                relocated[record.frame_key] = str(final)
            kill_point("moved")
        # The new names must be on disk before the in-progress copies' names disappear.
        fsync_dirs(Path(item.record.stored_path).parent for item in stored)
        fsync_dirs(Path(path).parent for path in relocated.values())
        for item in stored:
            release(item.frame)
        writes.set_stored_paths(self._engine, relocated)
