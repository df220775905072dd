"""Readers never block the writer: an export left open (piped into a pager) must not stop the
daemon's commits, and a reader's engine refuses writes."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from tests.helpers import write_config
from watcher.config import Config
from watcher.store.engine import make_engine
from watcher.store.export import iter_results
from watcher.store.migrate import upgrade_to_head
from watcher.store.queries import ResultFilter
from watcher.store.records import ResultRecord
from watcher.store.schema import Result
from watcher.store.writes import insert_new_rows

REPO = Path(__file__).resolve().parent.parent
# Short, so that a writer kept waiting by a reader fails fast ("database is locked").
WRITER_BUSY_TIMEOUT_MS = 500


def _rows(prefix: str, count: int) -> list[Result]:
    now = datetime.now(UTC)
    return [
        ResultRecord(
            frame_key=f"{prefix}{index:08d}",
            camera="cam-01",
            source_path=f"cam-01/{prefix}{index:08d}.bmp",
            stored_path=f"/srv/processed/cam-01/{prefix}{index:08d}.bmp",
            sha256="0" * 64,
            received_at=now,
            processed_at=now,
            status="ok",
            label="female",
            probability=0.9,
        )
        for index in range(count)
    ]


def _writer(url: str, *, rows: int) -> Engine:
    """The daemon's kind of engine (BEGIN IMMEDIATE on SQLite), on a migrated database with rows."""
    engine = make_engine(url, busy_timeout_ms=WRITER_BUSY_TIMEOUT_MS)
    upgrade_to_head(engine)
    with engine.begin() as connection:
        insert_new_rows(connection, _rows("old", rows))
    return engine


def _commit_takes(writer: Engine, prefix: str) -> float:
    started = time.monotonic()
    with writer.begin() as connection:
        inserted = insert_new_rows(connection, _rows(prefix, 10))
    assert len(inserted) == 10
    return time.monotonic() - started


def test_a_reader_halfway_through_an_export_does_not_block_the_writer(
    database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    writer = _writer(database_url, rows=3000)
    reader = make_engine(database_url, busy_timeout_ms=WRITER_BUSY_TIMEOUT_MS, read_only=True)

    rows = iter_results(reader, filters=ResultFilter(), limit=None)
    for _ in range(1500):  # its transaction is open, its cursor mid-stream
        next(rows)

    assert _commit_takes(writer, "new") < WRITER_BUSY_TIMEOUT_MS / 1000
    assert sum(1 for _ in rows) == 1500  # the reader finishes on its own snapshot
    reader.dispose()
    writer.dispose()


def test_results_piped_into_a_stalled_pager_do_not_block_the_daemon(tmp_path: Path) -> None:
    database = tmp_path / "data" / "results.sqlite3"
    database.parent.mkdir()
    writer = _writer(f"sqlite:///{database}", rows=20_000)  # megabytes of CSV: far over a pipe's buffer
    config = write_config(tmp_path / "config.toml", {"database": {"url": f"sqlite:///{database}"}})
    with (tmp_path / "results.err").open("wb") as stderr:
        # Like `cctv-gender results --format csv | less` with nobody paging: it blocks writing.
        pager = subprocess.Popen(
            [sys.executable, "-m", "watcher", "results", "--format", "csv", "--config", str(config)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        assert pager.stdout is not None
        # Rows are streaming (not just the CSV header, which may come before the query), so its
        # transaction is open; it now fills the pipe and blocks, as behind a pager nobody pages.
        assert pager.stdout.read(16_384).count(b"\n") > 10
        assert _commit_takes(writer, "new") < WRITER_BUSY_TIMEOUT_MS / 1000
        assert pager.poll() is None, "the export finished early: the test proved nothing"
    finally:
        pager.kill()
        pager.wait(timeout=30)
        if pager.stdout is not None:
            pager.stdout.close()
        writer.dispose()
    assert b"Traceback" not in (tmp_path / "results.err").read_bytes()


def test_a_read_only_engine_refuses_writes(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    _writer(database_url, rows=1).dispose()
    reader = make_engine(database_url, busy_timeout_ms=WRITER_BUSY_TIMEOUT_MS, read_only=True)

    with pytest.raises(DBAPIError) as refused, reader.begin() as connection:
        insert_new_rows(connection, _rows("sneaky", 1))

    # SQLite: "attempt to write a readonly database"; PostgreSQL: "... in a read-only transaction".
    assert re.search(r"read-?only", str(refused.value.orig))
    with reader.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM results").scalar() == 1
    reader.dispose()


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["results", "--format", "csv"], id="results"),
        pytest.param(["summary"], id="summary"),
        pytest.param(["status"], id="status"),
        pytest.param(["db", "copy", "--to", "sqlite:///{tmp}/copy.sqlite3"], id="db_copy_source"),
    ],
)
def test_read_commands_open_the_database_read_only(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import watcher.commands.db
    import watcher.commands.results
    import watcher.commands.summary
    import watcher.service.status
    import watcher.store.opening
    from watcher.commands.main import main

    database = tmp_path / "data" / "results.sqlite3"
    database.parent.mkdir()
    _writer(f"sqlite:///{database}", rows=1).dispose()
    config = write_config(tmp_path / "config.toml", {})
    opened: list[bool] = []
    real_open = watcher.store.opening.open_database

    def recording_open(config: Config, *, migrate: bool, read_only: bool = False) -> Engine:
        opened.append(read_only)
        return real_open(config, migrate=migrate, read_only=read_only)

    # Each module that opens the database, under the name it imported.
    for module in (
        watcher.commands.db,
        watcher.commands.results,
        watcher.commands.summary,
        watcher.service.status,
    ):
        monkeypatch.setattr(module, "open_database", recording_open)

    arguments = [part.format(tmp=tmp_path) for part in command]
    assert main([*arguments, "--config", str(config)]) == 0
    assert opened == [True]
