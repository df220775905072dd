"""The statements that write result rows: each frame's row inserted once, then where its file went.

The frame key is the idempotency key: a batch retried after a commit whose answer was lost (a
connection dropped mid-commit) inserts nothing twice, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, delete, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import StatementError

from watcher.store.errors import RowRejected
from watcher.store.records import ResultRecord, result_record
from watcher.store.schema import Result, Review
from watcher.store.session import orm_session, transaction
from watcher.store.sqlite_rows import insert_new_sqlite_rows

logger = logging.getLogger(__name__)

# Errors that one row brings on itself (a value its column cannot hold), not the database.
_ROW_ERRORS = (RowRejected, UnicodeError, OverflowError, ValueError)


@dataclass
class InsertOutcome:
    inserted: set[str] = field(default_factory=set)
    # Frame key → why its row cannot be stored; those rows are not in the database.
    rejected: dict[str, str] = field(default_factory=dict)


def upsert_capable_insert(dialect: str) -> Any:
    """The dialect's INSERT construct, which has ON CONFLICT (both engines we support do)."""
    return postgresql_insert if dialect == "postgresql" else sqlite_insert


def insert_new_rows(connection: Connection, records: Iterable[ResultRecord]) -> set[str]:
    """INSERT the records whose frame key has no row yet; returns the keys that were inserted.

    Rows go in key order, so concurrent writers take their index locks in the same order. On
    SQLite as one plain statement (watcher.store.sqlite_rows: the daemon's hottest Python).
    """
    return insert_new_rows_as_given(connection, sorted(records, key=lambda r: r.frame_key))


def insert_new_rows_as_given(connection: Connection, records: list[ResultRecord]) -> set[str]:
    """insert_new_rows in the records' own order, which the new rows' ids follow (`db copy` keeps
    the source's order: `results` lists newest first by id)."""
    if connection.dialect.name == "sqlite":
        return insert_new_sqlite_rows(connection, records)
    return insert_new_rows_portable(connection, records)


def insert_new_rows_portable(connection: Connection, records: Iterable[ResultRecord]) -> set[str]:
    """insert_new_rows as SQLAlchemy's own INSERT ... ON CONFLICT DO NOTHING, on any dialect."""
    values = [record.columns() for record in records]
    if not values:
        return set()
    insert = upsert_capable_insert(connection.dialect.name)
    statement = (
        insert(Result).on_conflict_do_nothing(index_elements=["frame_key"]).returning(Result.frame_key)
    )
    return set(connection.execute(statement, values).scalars())


def insert_new(
    engine: Engine,
    records: list[ResultRecord],
    *,
    before_write: Callable[[], None] = lambda: None,
    supersede_failed: bool = False,
) -> InsertOutcome:
    """One transaction for all the records; if some value cannot be stored, one per record, so
    only the records at fault are rejected. `before_write` runs with the write lock held.
    `supersede_failed` (a backfill's): an `ok` record's earlier failed rows are deleted in the
    same transaction as it is inserted, so a kill or a failed insert never leaves the file with
    neither row."""
    try:
        return InsertOutcome(
            inserted=_insert(engine, records, before_write, supersede_failed=supersede_failed)
        )
    except _ROW_ERRORS as error:
        logger.warning("the batch's rows cannot be stored together (%s): storing them one by one", error)
    outcome = InsertOutcome()
    for record in records:
        try:
            outcome.inserted |= _insert(engine, [record], before_write, supersede_failed=supersede_failed)
        except _ROW_ERRORS as error:
            cause = error.__cause__ if isinstance(error, RowRejected) else error  # the driver's error
            first_line = str(error).splitlines()[0] if str(error) else ""
            outcome.rejected[record.frame_key] = f"cannot store its row: {type(cause).__name__}: {first_line}"
    return outcome


def supersede_failed_rows(connection: Connection, records: list[ResultRecord]) -> None:
    """An archived file classified `ok` now replaces its earlier failed rows (a model error, a
    half-written file): one row per file stays the rule. Inbox rows are never touched. Runs in
    the transaction that inserts the `ok` rows (insert_new's `supersede_failed`)."""
    wanted: dict[str, list[str]] = {}
    for record in records:
        if record.status == "ok" and record.source != "inbox":
            wanted.setdefault(record.source, []).append(record.source_path)
    for source, paths in wanted.items():
        failed = select(Result.id).where(
            Result.source == source, Result.status == "failed", Result.source_path.in_(paths)
        )
        # Their reviews go with them: SQLite runs no ON DELETE CASCADE (foreign keys are off),
        # and a review left behind would label the next row given the freed id (no AUTOINCREMENT).
        connection.execute(delete(Review).where(Review.result_id.in_(failed)))
        connection.execute(delete(Result).where(Result.id.in_(failed)))


def _insert(
    engine: Engine, records: list[ResultRecord], before_write: Callable[[], None], *, supersede_failed: bool
) -> set[str]:
    try:
        with transaction(engine) as connection:
            before_write()
            if supersede_failed:
                supersede_failed_rows(connection, records)
            return insert_new_rows(connection, records)
    except StatementError as error:
        # A value a column's own conversion refuses (a naive time, say), which SQLAlchemy wraps:
        # the row's fault, as when SQLite's plain insert (sqlite_rows) meets it unwrapped.
        if isinstance(error.orig, _ROW_ERRORS):
            raise error.orig from None
        raise


def committed(engine: Engine, keys: Iterable[str]) -> dict[str, ResultRecord]:
    """The rows already stored for these frame keys."""
    wanted = list(keys)
    if not wanted:
        return {}
    with orm_session(engine) as session:
        rows = session.scalars(select(Result).where(Result.frame_key.in_(wanted)))
        return {row.frame_key: result_record(row) for row in rows}


def set_stored_paths(engine: Engine, stored: dict[str, str]) -> None:
    """Frame key → where its file is now (it could not go where its row first said)."""
    if not stored:
        return
    with transaction(engine) as connection:
        for key, path in stored.items():
            connection.execute(update(Result).where(Result.frame_key == key).values(stored_path=path))
