"""Stage four: committed frames' files moved to where their rows say, then their claims released.

The same steps finish a batch and finish what a crash left between commit and move (recovery),
so a frame is moved the same way whichever of the two gets to it. With file worker processes
(see watcher.pipeline.file_workers) the moves of a batch are shared out between them.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine

from watcher.intake import relocations
from watcher.pipeline.file_work import Move, move_all
from watcher.pipeline.recording import check_claims, check_output_folders
from watcher.pipeline.stages import OutputFolders, Stored
from watcher.store import writes

# Moves a batch's frames and releases their claims; returns the frames relocated (key → where).
Mover = Callable[[list[Move]], dict[str, str]]


class Deliverer:
    def __init__(
        self,
        engine: Engine,
        folders: OutputFolders,
        mover: Mover = move_all,
        *,
        claims_in_place: Callable[[], bool] = lambda: True,
    ) -> None:
        self._engine = engine
        self._folders = folders
        self._mover = mover
        self._claims_in_place = claims_in_place

    def deliver(self, stored: list[Stored]) -> None:
        # Moves wait for claims brought over (an inbox replaced): they would find nothing to move.
        check_claims(self._claims_in_place)
        # The moves go into the folders this look saw, or none (see watcher.intake.held_folders).
        folders = check_output_folders(self._folders)
        moves = []
        for item in stored:
            root = self._folders.for_status(item.record.status)
            moves.append(
                Move(item.frame, item.record.stored_path, root, item.record.sha256, identity=folders[root])
            )
        relocated = self._mover(moves)
        writes.set_stored_paths(self._engine, relocated)
        if relocated:
            # Their rows say where they went now: the notes that said it go (see relocations).
            relocations.forget(item.frame for item in stored if item.frame.key in relocated)
