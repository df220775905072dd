"""Result rows into SQLite as one plain multi-row INSERT: the daemon's hottest statement.

SQLAlchemy's insert of a batch builds a parameter dict a row and runs every value through its bind
processing in Python, about 23 µs a row of which the GIL is held throughout: the largest share
of the daemon's own Python once the file work is on processes (see bench/daemon_cpu.py). Here the
statement text is made once per batch size, each row is one tuple, and only the columns whose
type converts a value (the UTC times, the embedding) call that type's own bind processor, the
one SQLAlchemy would have called: the stored values are the same (tests/test_sqlite_rows.py).
"""

from __future__ import annotations

import functools
import operator
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect

from watcher.store.records import RESULT_FIELDS, ResultRecord
from watcher.store.schema import Result

# SQLite allows 32,766 bound values a statement (3.32 and newer); 20 columns a row.
ROWS_PER_STATEMENT = 500

_Converter = Callable[[Any], Any]


def insert_new_sqlite_rows(connection: Connection, records: Sequence[ResultRecord]) -> set[str]:
    """INSERT the records (already in key order) whose frame key has no row yet, on SQLite;
    returns the keys that were inserted. Same statement as SQLAlchemy's ON CONFLICT DO NOTHING."""
    columns = _columns(connection.dialect)
    inserted: set[str] = set()
    for start in range(0, len(records), ROWS_PER_STATEMENT):
        chunk = records[start : start + ROWS_PER_STATEMENT]
        values: list[Any] = []
        for record in chunk:
            at = len(values)
            values += columns.row_of(record)  # one C call for the row's values, in column order
            for index, convert in columns.conversions:
                values[at + index] = convert(values[at + index])
        result = connection.exec_driver_sql(_statement(columns.names, len(chunk)), tuple(values))
        inserted.update(row[0] for row in result)
    return inserted


@dataclass(frozen=True)
class _Columns:
    """The inserted columns in table order, how a record's values are read in that order, and the
    columns whose type converts a value on this dialect (index, its bind processor)."""

    names: tuple[str, ...]
    row_of: Callable[[ResultRecord], tuple[Any, ...]]
    conversions: tuple[tuple[int, _Converter], ...]


# Per dialect (one an engine), forgotten with its engine.
_columns_by_dialect: weakref.WeakKeyDictionary[Dialect, _Columns] = weakref.WeakKeyDictionary()


def _columns(dialect: Dialect) -> _Columns:
    known = _columns_by_dialect.get(dialect)
    if known is None:
        columns = [column for column in Result.__table__.columns if column.name != "id"]
        names = tuple(column.name for column in columns)
        if set(names) != set(RESULT_FIELDS) - {"id"}:
            raise RuntimeError(f"results columns {names} are not the record's fields {RESULT_FIELDS}")
        processors = [column.type.dialect_impl(dialect).bind_processor(dialect) for column in columns]
        known = _columns_by_dialect[dialect] = _Columns(
            names=names,
            row_of=operator.attrgetter(*names),
            conversions=tuple(
                (index, convert) for index, convert in enumerate(processors) if convert is not None
            ),
        )
    return known


@functools.lru_cache(maxsize=16)
def _statement(names: tuple[str, ...], rows: int) -> str:
    row = "(" + ", ".join("?" * len(names)) + ")"
    return (
        f"INSERT INTO {Result.__tablename__} ({', '.join(names)}) VALUES {', '.join([row] * rows)} "
        "ON CONFLICT (frame_key) DO NOTHING RETURNING frame_key"
    )
