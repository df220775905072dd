"""Result rows into SQLite as one plain multi-row INSERT: the daemon's hottest statement.

SQLAlchemy's insert of a batch builds a parameter dict a row and runs every value through its bind
processing in Python, about 23 µs a row of which the GIL is held throughout: the largest share
of the daemon's own Python once the file work is on processes (see bench/daemon_cpu.py). Here the
statement text is made once per batch size, each row is one tuple, and only the columns whose
type converts a value (the UTC times, the embedding) call that type's own bind processor, the
one SQLAlchemy would have called: the stored values are the same (tests/test_sqlite_rows.py).

Which rows went in is told by the statement's count, not by RETURNING: Python's sqlite3 fetches
each returned row with a call of its own that gives the GIL back and must take it again, and
beside the daemon's other threads running Python each take can wait up to the switch interval
(5 ms). A batch of 128 rows waited ~20 ms more that way (bench/commits.py --busy 1), with its
commit holding the write lock that the other lanes' commits queue for. The insert runs inside a
savepoint: when the count falls short (some keys had their rows already: a retry after a lost
commit answer), it is undone and run again with RETURNING, which says which.
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
# Undoes one statement's rows, inside whatever transaction the caller holds.
_SAVEPOINT = "new_result_rows"

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
        inserted |= _inserted_chunk(connection, columns.names, chunk, tuple(values))
    return inserted


def _inserted_chunk(
    connection: Connection, names: tuple[str, ...], chunk: Sequence[ResultRecord], values: tuple[Any, ...]
) -> set[str]:
    """One statement's rows inserted; the keys that went in. An error leaves the savepoint to the
    rollback of the caller's transaction."""
    if not connection.connection.driver_connection.in_transaction:  # type: ignore[union-attr]  # sqlite3's
        # No BEGIN yet (an engine not made by make_engine, which begins IMMEDIATE): a SAVEPOINT
        # would open a transaction of its own and RELEASE commit it, whatever the caller then does.
        return _returned_keys(connection, names, len(chunk), values)
    connection.exec_driver_sql(f"SAVEPOINT {_SAVEPOINT}")
    counted = connection.exec_driver_sql(_statement(names, len(chunk), returning=False), values).rowcount
    if counted == len(chunk):
        keys = {record.frame_key for record in chunk}
    else:
        connection.exec_driver_sql(f"ROLLBACK TO {_SAVEPOINT}")
        keys = _returned_keys(connection, names, len(chunk), values)
    connection.exec_driver_sql(f"RELEASE {_SAVEPOINT}")
    return keys


def _returned_keys(
    connection: Connection, names: tuple[str, ...], rows: int, values: tuple[Any, ...]
) -> set[str]:
    """The rows inserted with RETURNING: the keys that went in, told by SQLite itself."""
    result = connection.exec_driver_sql(_statement(names, rows, returning=True), values)
    return {row[0] for row in result}


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
def _statement(names: tuple[str, ...], rows: int, *, returning: bool) -> str:
    row = "(" + ", ".join("?" * len(names)) + ")"
    return (
        f"INSERT INTO {Result.__tablename__} ({', '.join(names)}) VALUES {', '.join([row] * rows)} "
        f"ON CONFLICT (frame_key) DO NOTHING{' RETURNING frame_key' if returning else ''}"
    )
