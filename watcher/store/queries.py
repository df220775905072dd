"""The filters operators put on results and summaries, turned into SQL on the `results` table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, select

from watcher.store.schema import Result
from watcher.store.session import translated_errors


@dataclass(frozen=True)
class ResultFilter:
    cameras: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    label: str | None = None
    min_probability: float | None = None
    status: str | None = None
    model_version: str | None = None

    def apply(self, statement: Select[Any]) -> Select[Any]:
        if self.cameras:
            statement = statement.where(Result.camera.in_(self.cameras))
        if self.since is not None:
            statement = statement.where(Result.processed_at >= self.since)
        if self.until is not None:
            statement = statement.where(Result.processed_at < self.until)
        if self.label is not None:
            statement = statement.where(Result.label == self.label)
        if self.min_probability is not None:
            statement = statement.where(Result.probability >= self.min_probability)
        if self.status is not None:
            statement = statement.where(Result.status == self.status)
        if self.model_version is not None:
            statement = statement.where(Result.model_version == self.model_version)
        return statement


def unseen_cameras(engine: Engine, cameras: tuple[str, ...]) -> list[str]:
    """The asked-for cameras that have no row at all (likely typos)."""
    unseen = []
    with translated_errors(), engine.connect() as connection:
        for camera in cameras:
            if connection.execute(select(Result.id).where(Result.camera == camera).limit(1)).first() is None:
                unseen.append(camera)
    return unseen


def known_cameras(engine: Engine) -> list[str]:
    with translated_errors(), engine.connect() as connection:
        rows = connection.execute(
            select(Result.camera).where(Result.camera.is_not(None)).distinct()
        ).scalars()
        return sorted(camera for camera in rows if camera is not None)
