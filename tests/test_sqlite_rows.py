"""The daemon's SQLite insert (watcher.store.sqlite_rows) stores what SQLAlchemy's own insert
stores: the same values of the same SQLite types, the same keys reported inserted, rows already
there left alone, and a row SQLite cannot take refused alone."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine

from watcher.store import sqlite_rows, writes
from watcher.store.engine import make_engine
from watcher.store.migrate import upgrade_to_head
from watcher.store.records import RESULT_FIELDS, ResultRecord
from watcher.store.session import transaction

# Text SQLite can store (lone surrogates cannot be written as UTF-8: see the last test).
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
_maybe_text = st.none() | _text
_aware = st.builds(
    lambda moment, minutes: moment.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(min_value=datetime(1001, 1, 1), max_value=datetime(9998, 12, 31)),
    st.integers(-23 * 60, 23 * 60),
)
_int64 = st.integers(-(2**63), 2**63 - 1)


@st.composite
def _records(draw: st.DrawFn) -> list[ResultRecord]:
    keys = draw(st.lists(st.text("0123456789abcdef", min_size=32, max_size=32), max_size=12, unique=True))
    return [
        ResultRecord(
            frame_key=key,
            source_path=draw(_text),
            stored_path=draw(_text),
            received_at=draw(_aware),
            processed_at=draw(_aware),
            status=draw(st.sampled_from(["ok", "failed"])),
            camera=draw(_maybe_text),
            sha256=draw(_maybe_text),
            size_bytes=draw(st.none() | _int64),
            width=draw(st.none() | _int64),
            height=draw(st.none() | _int64),
            file_mtime=draw(st.none() | _aware),
            label=draw(st.sampled_from([None, "female", "male"])),
            probability=draw(st.none() | st.floats(allow_nan=True)),
            model_version=draw(_maybe_text),
            precision=draw(_maybe_text),
            error=draw(_maybe_text),
            embedding=draw(st.none() | st.binary(max_size=64)),
            embedding_model=draw(_maybe_text),
            source=draw(_text),
        )
        for key in keys
    ]


def _row(index: int, **fields: object) -> ResultRecord:
    """A plain row of frame `index` (now, ok), with `fields` set on it."""
    now = datetime.now(UTC)
    plain: dict[str, object] = {
        "frame_key": f"{index:032x}", "source_path": f"cam/{index}.bmp", "stored_path": f"/p/{index}.bmp",
        "received_at": now, "processed_at": now, "status": "ok",
    }  # fmt: skip
    return ResultRecord(**(plain | fields))  # type: ignore[arg-type]  # the fields' own types


def _engine(path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{path}", busy_timeout_ms=1000)
    upgrade_to_head(engine)
    return engine


def _stored(path: Path) -> list[tuple[object, ...]]:
    """Every column of every row with its SQLite type, as any client reads them."""
    columns = ", ".join(f"typeof({name}), {name}" for name in RESULT_FIELDS if name != "id")
    with sqlite3.connect(path) as connection:
        return connection.execute(f"SELECT {columns} FROM results ORDER BY frame_key").fetchall()


def _insert(
    engine: Engine, insert: Callable[[Connection, list[ResultRecord]], set[str]], rows: list[ResultRecord]
) -> set[str]:
    with transaction(engine) as connection:
        return insert(connection, sorted(rows, key=lambda r: r.frame_key))


@pytest.fixture(scope="module")
def databases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("rows")
    return folder / "fast.sqlite3", folder / "portable.sqlite3"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=_records())
def test_the_same_rows_as_sqlalchemys_insert(
    databases: tuple[Path, Path], records: list[ResultRecord]
) -> None:
    fast, portable = (_engine(path) for path in databases)
    with transaction(fast) as connection:
        connection.exec_driver_sql("DELETE FROM results")
    with transaction(portable) as connection:
        connection.exec_driver_sql("DELETE FROM results")

    inserted = _insert(fast, sqlite_rows.insert_new_sqlite_rows, records)
    expected = _insert(portable, writes.insert_new_rows_portable, records)

    assert inserted == expected == {record.frame_key for record in records}
    assert _stored(databases[0]) == _stored(databases[1])
    fast.dispose()
    portable.dispose()


def test_rows_already_there_are_left_and_not_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Several statements a batch (the limit made small), keys that exist already among them.
    monkeypatch.setattr(sqlite_rows, "ROWS_PER_STATEMENT", 3)
    engine = _engine(tmp_path / "results.sqlite3")
    assert writes.insert_new(engine, [_row(index, label="female") for index in range(0, 10, 2)]).inserted == {
        f"{index:032x}" for index in range(0, 10, 2)
    }
    outcome = writes.insert_new(engine, [_row(index, label="male") for index in range(10)])

    assert outcome.inserted == {f"{index:032x}" for index in range(1, 10, 2)}
    labels = dict(
        sqlite3.connect(tmp_path / "results.sqlite3").execute("SELECT frame_key, label FROM results")
    )
    assert labels == {f"{index:032x}": "female" if index % 2 == 0 else "male" for index in range(10)}


def test_a_value_sqlite_cannot_take_is_refused_alone(tmp_path: Path) -> None:
    rows = [
        _row(index, source_path=path)
        for index, path in enumerate(["cam/a.bmp", "cam/\udcff.bmp", "cam/c.bmp"])
    ]
    outcome = writes.insert_new(_engine(tmp_path / "results.sqlite3"), rows)

    assert outcome.inserted == {f"{0:032x}", f"{2:032x}"}
    assert list(outcome.rejected) == [f"{1:032x}"]
    assert outcome.rejected[f"{1:032x}"].startswith("cannot store its row: UnicodeEncodeError")


def test_a_value_its_column_cannot_convert_is_refused_alone_on_either_database(
    database_url: str, tmp_path: Path
) -> None:
    # A naive time meets UTCDateTime's own check: on SQLite in the plain insert, on PostgreSQL
    # inside SQLAlchemy (which wraps it); either way that row fails and the others are stored.
    (tmp_path / "data").mkdir(exist_ok=True)
    engine = make_engine(database_url, busy_timeout_ms=1000)
    upgrade_to_head(engine)
    rows = [
        _row(index, file_mtime=mtime)
        for index, mtime in enumerate([datetime.now(UTC), datetime(2026, 11, 27, 1, 0), None])
    ]
    try:
        outcome = writes.insert_new(engine, rows)
    finally:
        engine.dispose()

    assert outcome.inserted == {f"{0:032x}", f"{2:032x}"}
    assert outcome.rejected == {
        f"{1:032x}": "cannot store its row: ValueError: naive datetime given to a UTC column"
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=_records(), there_already=st.sets(st.integers(0, 11)), per_statement=st.integers(1, 5))
def test_keys_with_rows_already_are_told_apart_as_sqlalchemys_insert_tells_them(
    databases: tuple[Path, Path],
    records: list[ResultRecord],
    there_already: set[int],
    per_statement: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The count of a statement's rows says they all went in; when it falls short, the statement
    # is undone to its savepoint and run again with RETURNING. Several statements a call, so an
    # undone one must leave the earlier ones' rows.
    monkeypatch.setattr(sqlite_rows, "ROWS_PER_STATEMENT", per_statement)
    earlier = [
        _row(index, frame_key=record.frame_key, label="female")
        for index, record in enumerate(records)
        if index in there_already
    ]
    fast, portable = (_engine(path) for path in databases)
    for engine in (fast, portable):
        with transaction(engine) as connection:
            connection.exec_driver_sql("DELETE FROM results")
        _insert(engine, writes.insert_new_rows_portable, earlier)

    inserted = _insert(fast, sqlite_rows.insert_new_sqlite_rows, records)
    expected = _insert(portable, writes.insert_new_rows_portable, records)

    assert inserted == expected == {record.frame_key for record in records} - {r.frame_key for r in earlier}
    assert _stored(databases[0]) == _stored(databases[1])
    fast.dispose()
    portable.dispose()


def _statements_run(engine: Engine, rows: list[ResultRecord]) -> tuple[set[str], list[str]]:
    """The keys insert_new_sqlite_rows reports inserted, and the SQL it ran to learn them."""
    statements: list[str] = []
    with transaction(engine) as connection:
        connection.connection.driver_connection.set_trace_callback(statements.append)  # type: ignore[union-attr]  # sqlite3's connection
        try:
            inserted = sqlite_rows.insert_new_sqlite_rows(connection, rows)
        finally:
            connection.connection.driver_connection.set_trace_callback(None)  # type: ignore[union-attr]
    return inserted, [
        statement.split(" (")[0] + (" RETURNING" if "RETURNING" in statement else "")
        for statement in statements
    ]


def test_new_rows_are_counted_not_returned_and_rows_already_there_are_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_rows, "ROWS_PER_STATEMENT", 2)
    engine = _engine(tmp_path / "results.sqlite3")

    inserted, statements = _statements_run(engine, [_row(0), _row(1)])
    assert inserted == {f"{0:032x}", f"{1:032x}"}
    assert statements == ["SAVEPOINT new_result_rows", "INSERT INTO results", "RELEASE new_result_rows"]

    # The first statement's rows are all new, the second's are not: only the second is undone.
    inserted, statements = _statements_run(engine, [_row(2), _row(3), _row(1, label="male"), _row(4)])
    assert inserted == {f"{index:032x}" for index in (2, 3, 4)}
    assert statements == [
        "SAVEPOINT new_result_rows", "INSERT INTO results", "RELEASE new_result_rows",
        "SAVEPOINT new_result_rows", "INSERT INTO results", "ROLLBACK TO new_result_rows",
        "INSERT INTO results RETURNING", "RELEASE new_result_rows",
    ]  # fmt: skip
    with sqlite3.connect(tmp_path / "results.sqlite3") as connection:
        rows = dict(connection.execute("SELECT frame_key, label FROM results"))
    assert sorted(rows) == [f"{index:032x}" for index in range(5)]
    assert rows[f"{1:032x}"] is None  # the row there already was left as it was


def test_a_key_twice_in_one_call_is_inserted_once_as_sqlalchemys_insert_does(tmp_path: Path) -> None:
    fast, portable = _engine(tmp_path / "fast.sqlite3"), _engine(tmp_path / "portable.sqlite3")
    twice = [_row(7, label="female"), _row(7, label="male"), _row(8)]

    assert _insert(fast, sqlite_rows.insert_new_sqlite_rows, twice) == {f"{7:032x}", f"{8:032x}"}
    assert _insert(portable, writes.insert_new_rows_portable, twice) == {f"{7:032x}", f"{8:032x}"}
    assert _stored(tmp_path / "fast.sqlite3") == _stored(tmp_path / "portable.sqlite3")


def test_without_a_begin_the_rows_still_go_with_the_callers_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An engine that does not begin IMMEDIATE (not make_engine's): a savepoint would open and
    # commit a transaction of its own, and the first statement's rows would outlive the caller's
    # rollback when the second fails.
    from sqlalchemy import create_engine

    monkeypatch.setattr(sqlite_rows, "ROWS_PER_STATEMENT", 2)

    _engine(tmp_path / "results.sqlite3").dispose()  # the schema
    plain = create_engine(f"sqlite:///{tmp_path / 'results.sqlite3'}")
    with pytest.raises(UnicodeError), plain.begin() as connection:
        sqlite_rows.insert_new_sqlite_rows(connection, [_row(0), _row(1), _row(2, source_path="x\udc80")])
    plain.dispose()

    assert sqlite3.connect(tmp_path / "results.sqlite3").execute(
        "SELECT count(*) FROM results"
    ).fetchone() == (0,)
