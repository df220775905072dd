"""The `[paths]` section: the inbox and the folders frames leave it for, compared once resolved."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, model_validator

from watcher.config.base import FolderPath, Section
from watcher.config.errors import raise_problems


class PathsConfig(Section):
    """Folders, absolute or relative to the config file's folder."""

    inbox: FolderPath = Field(
        Path("inbox"),
        description="Operators' CCTV systems export .bmp frames here. A subfolder names the camera: "
        "inbox/cam-07/x.bmp is camera `cam-07`; frames directly in the inbox have no camera. "
        "Frames being worked on wait in inbox/.in-progress/ (same filesystem, so claiming is "
        "atomic).",
    )
    processed: FolderPath = Field(
        Path("processed"),
        description="Frames whose result row is committed, keeping their camera subfolder. Not the "
        "inbox, not inside it, and not a folder the inbox is inside, however written (.., a "
        "symlink).",
    )
    failed: FolderPath = Field(
        Path("failed"),
        description="Frames that could not be classified (reason in the database's `error` column). "
        "The same rules as processed, and not the same folder as processed.",
    )
    data: FolderPath = Field(
        Path("data"),
        description="State: the results database (unless database.url says otherwise) and the model "
        "registry. The database file may not be inside the inbox.",
    )

    def site_folders(self) -> dict[str, Path]:
        """The folders the daemon owns, by their config key: frames arrive in the first and leave
        for the other two, so no other command may write into, archive or export from them."""
        return {"paths.inbox": self.inbox, "paths.processed": self.processed, "paths.failed": self.failed}

    @model_validator(mode="after")
    def post_validation(self) -> Self:
        """With context, the paths are resolved by now: `..` and symlinks no longer disguise one
        folder as another."""
        raise_problems(self._clashes())
        return self

    def _clashes(self) -> list[tuple[str, str]]:
        inbox = self.inbox
        problems: list[tuple[str, str]] = []
        for key, folder in (("processed", self.processed), ("failed", self.failed)):
            if folder == inbox:
                problems.append((key, f"must differ from paths.inbox (both are {folder})"))
            # Frames moved there would be found in the inbox again and processed twice.
            elif folder.is_relative_to(inbox):
                problems.append((key, f"must not be inside paths.inbox ({inbox}); it is {folder}"))
            # A camera folder named like the path down to the inbox would move frames back into it.
            elif inbox.is_relative_to(folder):
                problems.append(("inbox", f"must not be inside paths.{key} ({folder}); it is {inbox}"))
        if self.failed == self.processed:
            problems.append(("failed", f"must differ from paths.processed (both are {self.failed})"))
        return problems
