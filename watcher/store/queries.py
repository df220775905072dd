"""The filters operators put on results and summaries, turned into SQL on the `results` table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, Select, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import ColumnElement

from watcher.store.schema import Result, captured_at
from watcher.store.session import translated_errors


class TimeBasis(StrEnum):
    """Which time of a frame `--since/--until` and the summaries' hours and days follow."""

    # The frame file's time (when the camera system wrote it): a backfill of old frames lands in
    # the hours they were taken. Rows without one fall back to their processing time.
    CAPTURED = "captured"
    PROCESSED = "processed"


def time_column(basis: TimeBasis) -> ColumnElement[datetime]:
    # The very expression of the captured-time indexes (watcher.store.schema), so they are used.
    return captured_at if basis == TimeBasis.CAPTURED else Result.processed_at.expression


@dataclass(frozen=True)
class ResultFilter:
    cameras: tuple[str, ...] = ()
    # Frames directly in the inbox have no camera (NULL): `--camera ''` asks for them, alone or
    # beside named cameras.
    without_camera: bool = False
    since: datetime | None = None
    until: datetime | None = None
    label: str | None = None
    min_probability: float | None = None
    status: str | None = None
    model_version: str | None = None
    time_basis: TimeBasis = TimeBasis.PROCESSED
    # Paging newest first: only rows older (smaller id) than this one.
    before_id: int | None = None

    def apply(self, statement: Select[Any]) -> Select[Any]:
        if self.cameras or self.without_camera:
            chosen: list[ColumnElement[bool]] = [Result.camera.in_(self.cameras)] if self.cameras else []
            if self.without_camera:
                chosen.append(Result.camera.is_(None))
            statement = statement.where(or_(*chosen))
        at = time_column(self.time_basis)
        if self.since is not None:
            statement = statement.where(at >= self.since)
        if self.until is not None:
            statement = statement.where(at < self.until)
        if self.before_id is not None:
            statement = statement.where(Result.id < self.before_id)
        if self.label is not None:
            statement = statement.where(Result.label == self.label)
        if self.min_probability is not None:
            statement = statement.where(Result.probability >= self.min_probability)
        if self.status is not None:
            statement = statement.where(Result.status == self.status)
        if self.model_version is not None:
            statement = statement.where(Result.model_version == self.model_version)
        return statement


def count_results(engine: Engine, filters: ResultFilter) -> int:
    """How many rows match (what a table cut by --limit says it left out)."""
    with translated_errors(), engine.connect() as connection:
        return int(connection.execute(filters.apply(select(func.count()).select_from(Result))).scalar_one())


def unseen_cameras(engine: Engine, cameras: tuple[str, ...]) -> list[str]:
    """The asked-for cameras that have no row at all (likely typos)."""
    return _unseen(engine, Result.camera, cameras)


def known_cameras(engine: Engine) -> list[str]:
    return _known(engine, Result.camera)


def unseen_model_versions(engine: Engine, versions: tuple[str, ...]) -> list[str]:
    """The asked-for model versions that classified no row at all (a typo, or `zero-shot` for
    `zero-shot:<model>`)."""
    return _unseen(engine, Result.model_version, versions)


def known_model_versions(engine: Engine) -> list[str]:
    return _known(engine, Result.model_version)


def _unseen(engine: Engine, column: InstrumentedAttribute[str | None], values: tuple[str, ...]) -> list[str]:
    unseen = []
    with translated_errors(), engine.connect() as connection:
        for value in values:
            if connection.execute(select(Result.id).where(column == value).limit(1)).first() is None:
                unseen.append(value)
    return unseen


def _known(engine: Engine, column: InstrumentedAttribute[str | None]) -> list[str]:
    with translated_errors(), engine.connect() as connection:
        rows = connection.execute(select(column).where(column.is_not(None)).distinct()).scalars()
        return sorted(value for value in rows if value is not None)


def stored_path_of(engine: Engine, result_id: int) -> str | None:
    """Where the frame of one row lies now (None: no such row)."""
    with translated_errors(), engine.connect() as connection:
        return connection.execute(select(Result.stored_path).where(Result.id == result_id)).scalar()


def result_fields(engine: Engine, result_id: int) -> dict[str, Any] | None:
    """One row's columns, the embedding left out (None: no such row)."""
    columns = [column for column in Result.__table__.columns if column.name != "embedding"]
    with translated_errors(), engine.connect() as connection:
        row = connection.execute(select(*columns).where(Result.id == result_id)).mappings().first()
    return dict(row) if row is not None else None


def archive_rows(
    engine: Engine, source: str, paths: list[str]
) -> dict[str, list[tuple[int | None, datetime | None]]]:
    """An archive's `ok` rows so far for these stored paths, path → every (size, file time) it was
    classified with (a file rewritten has a row per content): what a rerun of its backfill skips."""
    statement = select(Result.source_path, Result.size_bytes, Result.file_mtime)
    statement = statement.where(Result.source == source, Result.status == "ok", Result.source_path.in_(paths))
    done: dict[str, list[tuple[int | None, datetime | None]]] = {}
    with translated_errors(), engine.connect() as connection:
        for path, size, mtime in connection.execute(statement):
            done.setdefault(path, []).append((size, mtime))
    return done
