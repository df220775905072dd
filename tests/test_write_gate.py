"""The process's writes to SQLite take turns at the write gate (watcher.store.write_gate) instead
of sleeping in SQLite's busy handler: real SQLite files, real threads."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from watcher.store.engine import make_engine
from watcher.store.errors import StorageUnavailable
from watcher.store.session import orm_session, transaction
from watcher.store.write_gate import write_gate


def _engine(tmp_path: Path, *, busy_timeout_ms: int = 10_000) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'gate.sqlite3'}", busy_timeout_ms=busy_timeout_ms)
    with transaction(engine) as connection:
        connection.exec_driver_sql("CREATE TABLE IF NOT EXISTS seen (lane INTEGER, turn INTEGER)")
    return engine


def test_lanes_writing_at_once_take_turns_and_none_is_refused(tmp_path: Path) -> None:
    engine = _engine(tmp_path, busy_timeout_ms=2_000)
    inside, most_inside, errors = 0, 0, []
    counting = threading.Lock()

    def lane(number: int) -> None:
        nonlocal inside, most_inside
        try:
            for turn in range(15):
                with transaction(engine) as connection:
                    with counting:
                        inside += 1
                        most_inside = max(most_inside, inside)
                    connection.exec_driver_sql("INSERT INTO seen VALUES (?, ?)", (number, turn))
                    with counting:
                        inside -= 1
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    lanes = [threading.Thread(target=lane, args=(number,)) for number in range(6)]
    for thread in lanes:
        thread.start()
    for thread in lanes:
        thread.join(timeout=60)

    assert errors == [] and most_inside == 1
    with orm_session(engine) as session:
        assert session.connection().exec_driver_sql("SELECT count(*) FROM seen").scalar() == 6 * 15


def test_a_write_waiting_past_the_busy_timeout_is_the_transient_locked_error(tmp_path: Path) -> None:
    """As SQLite's own "database is locked" with its busy timeout: the batch is parked and retried."""
    engine = _engine(tmp_path, busy_timeout_ms=200)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with transaction(engine) as connection:
            connection.exec_driver_sql("INSERT INTO seen VALUES (0, 0)")
            holding.set()
            release.wait(timeout=30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(timeout=30)
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match="database is locked"):
            with orm_session(engine, write=True):
                pass
        assert time.monotonic() - started < 5  # the timeout, not forever
    finally:
        release.set()
        holder.join(timeout=30)
    with transaction(engine) as connection:  # free again once the holder committed
        connection.exec_driver_sql("INSERT INTO seen VALUES (1, 1)")


def test_a_nested_write_of_the_same_thread_passes_the_gate(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    with write_gate(engine), write_gate(engine), transaction(engine) as connection:
        connection.exec_driver_sql("INSERT INTO seen VALUES (2, 2)")


def test_readers_and_server_databases_have_no_gate(tmp_path: Path) -> None:
    _engine(tmp_path)  # the file and its table
    reader = make_engine(f"sqlite:///{tmp_path / 'gate.sqlite3'}", busy_timeout_ms=100, read_only=True)
    server = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", busy_timeout_ms=100)
    for engine in (reader, server):
        assert type(write_gate(engine)).__name__ == "nullcontext"
