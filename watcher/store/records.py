"""What the store hands out and takes in: plain frozen dataclasses, never ORM rows."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from watcher.frozen import frozen_when_checked


class Status(StrEnum):
    OK = "ok"
    FAILED = "failed"


@frozen_when_checked  # made for every frame (see watcher.frozen)
class ResultRecord:
    """One row of `results`: one frame taken from the inbox (see watcher.store.schema.Result)."""

    frame_key: str
    source_path: str
    stored_path: str
    received_at: datetime
    processed_at: datetime
    status: str
    camera: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    width: int | None = None
    height: int | None = None
    file_mtime: datetime | None = None
    label: str | None = None
    probability: float | None = None
    model_version: str | None = None
    precision: str | None = None
    error: str | None = None
    embedding: bytes | None = None
    embedding_model: str | None = None
    # Where the frame came from: `inbox` (the daemon), or `archive:<folder>` (`backfill`).
    source: str = "inbox"
    # Given by the database: None on a record not yet stored.
    id: int | None = None

    def columns(self) -> dict[str, Any]:
        """The values to insert (every column but the database's own `id`). Shallow: asdict's
        deep copy of every value cost more than the rest of a frame's bookkeeping."""
        return {name: getattr(self, name) for name in _INSERTED}


RESULT_FIELDS = tuple(field.name for field in fields(ResultRecord))
_INSERTED = tuple(name for name in RESULT_FIELDS if name != "id")


def result_record(row: Any) -> ResultRecord:
    """A record from anything with the columns as attributes (an ORM row, a Row)."""
    return ResultRecord(**{name: getattr(row, name) for name in RESULT_FIELDS})
