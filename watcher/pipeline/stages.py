"""What a frame is between the pipeline's stages: Claimed → Decoded → Classified → Stored.

Each stage takes the one before it and returns the next; none is changed after it is made, so a
frame's state can be read on any thread without asking who else holds it. The type checker holds
them to that (see watcher.frozen: made for every frame, they are not frozen at run time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from watcher.frozen import frozen_when_checked
from watcher.intake.claimed import ClaimedFrame
from watcher.intake.site_mounts import SiteMounts
from watcher.store.records import ResultRecord, Status

if TYPE_CHECKING:  # file workers import this module, and never torch
    from model.packed import PackedBmp

# Taken out of the inbox into the in-progress area (see watcher.intake.claiming).
Claimed = ClaimedFrame


@dataclass(frozen=True)
class OutputFolders:
    processed: Path
    failed: Path
    # The mount points they were under at the daemon's start: under another, one counts as missing.
    mounts: SiteMounts = field(default_factory=SiteMounts, compare=False)

    def for_status(self, status: str) -> Path:
        return self.processed if status == Status.OK else self.failed


@dataclass(frozen=True)
class FrameBounds:
    """What the daemon refuses before reading a frame (see model.images.check_before_reading)."""

    max_pixels: int
    max_file_bytes: int


@frozen_when_checked  # made for every frame (see watcher.frozen)
class FileFacts:
    """What reading a frame's file learned, as much as it got to before any failure."""

    size_bytes: int | None = None
    file_mtime: datetime | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None


@frozen_when_checked  # made for every frame (see watcher.frozen)
class Decoded:
    frame: Claimed
    facts: FileFacts
    # (height, width, 3) uint8 RGB, or a BMP's rows still in an arena (see
    # watcher.pipeline.arenas); None when `error` says why.
    pixels: np.ndarray | PackedBmp | None
    error: str | None = None


@frozen_when_checked  # made for every frame (see watcher.frozen)
class Classification:
    label: str
    probability: float
    model_version: str
    precision: str
    # The CLIP features and what produced them, when the database keeps them.
    embedding: bytes | None = None
    embedding_model: str | None = None


@frozen_when_checked  # made for every frame (see watcher.frozen)
class Classified:
    frame: Claimed
    facts: FileFacts
    classification: Classification | None  # None when `error` says why
    error: str | None = None

    @property
    def status(self) -> Status:
        return Status.OK if self.classification is not None else Status.FAILED


@frozen_when_checked  # made for every frame (see watcher.frozen)
class Stored:
    """The frame's row is committed; its file is still in the in-progress area."""

    frame: Claimed
    record: ResultRecord
