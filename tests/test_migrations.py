from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from tests.helpers import query, wait_for
from watcher.store import migrate
from watcher.store.engine import make_engine
from watcher.store.errors import StorageUnavailable
from watcher.store.migrate import MIGRATION_LOCK_KEY, current_revision, head_revision, upgrade_to_head
from watcher.store.schema import Base


def test_upgrade_on_an_empty_database_creates_the_schema(tmp_path: Path) -> None:
    database = tmp_path / "results.sqlite3"
    engine = make_engine(f"sqlite:///{database}", busy_timeout_ms=1000)

    assert current_revision(engine) is None
    assert upgrade_to_head(engine) == head_revision()

    tables = {name for (name,) in query(database, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"results", "alembic_version"} <= tables
    indexes = {name for (name,) in query(database, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {
        "ix_results_processed_at",
        "ix_results_camera_processed_at",
        "ix_results_label_processed_at",
        "ix_results_status_processed_at",
    } <= indexes


def test_upgrade_twice_is_harmless(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    engine = make_engine(database_url, busy_timeout_ms=1000)
    upgrade_to_head(engine)
    assert upgrade_to_head(engine) == head_revision()
    engine.dispose()


def test_the_models_match_the_migrations(database_url: str, tmp_path: Path) -> None:
    # The same migrations build the same schema on both engines, and it is what the models say.
    (tmp_path / "data").mkdir()
    engine = make_engine(database_url, busy_timeout_ms=1000)
    upgrade_to_head(engine)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []


def test_sqlite_runs_in_wal_with_full_sync(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'r.sqlite3'}", busy_timeout_ms=1234)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        # 2 is FULL.
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234


def test_upgrading_from_the_first_revision_keeps_the_rows(tmp_path: Path) -> None:
    from alembic import command

    from watcher.store.migrate import _alembic_config

    database = tmp_path / "r.sqlite3"
    engine = make_engine(f"sqlite:///{database}", busy_timeout_ms=1000)
    command.upgrade(_alembic_config(engine), "0001")
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO results (frame_key, source_path, stored_path, received_at, processed_at, status) "
            "VALUES ('k1', 'cam/x.bmp', '/p/cam/x.bmp', '2026-11-25 08:00:00', '2026-11-25 08:00:01', 'ok')"
        )

    upgrade_to_head(engine)

    assert query(database, "SELECT frame_key, source_path, embedding FROM results") == [
        ("k1", "cam/x.bmp", None)
    ]


def test_upgrading_from_0005_keeps_the_rows_and_makes_room(database_url: str, tmp_path: Path) -> None:
    # 0006 rewrites column types on PostgreSQL, around the view that depends on them.
    from alembic import command

    from watcher.store.migrate import _alembic_config

    (tmp_path / "data").mkdir()
    engine = make_engine(database_url, busy_timeout_ms=1000)
    command.upgrade(_alembic_config(engine), "0005")
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO results (frame_key, camera, source_path, stored_path, size_bytes, received_at, "
            "processed_at, status) VALUES ('k1', 'cam-01', 'cam-01/x.bmp', '/p/cam-01/x.bmp', 1234, "
            "'2026-11-25 08:00:00', '2026-11-25 08:00:01', 'ok')"
        )
        connection.exec_driver_sql(
            "INSERT INTO instances (name, host, pid, state, started_at, last_seen_at, claimed, frames_ok, "
            "frames_failed, frames_per_s) VALUES ('node-0', 'h', 1, 'stopped', '2026-11-25 08:00:00', "
            "'2026-11-25 09:00:00', 0, 5, 0, 1.5)"
        )

    upgrade_to_head(engine)

    with engine.connect() as connection:
        assert connection.exec_driver_sql(
            "SELECT frame_key, camera, size_bytes, status FROM results"
        ).all() == [("k1", "cam-01", 1234, "ok")]
        assert connection.exec_driver_sql("SELECT camera, size_bytes FROM v_results").all() == [
            ("cam-01", 1234)
        ]
        assert connection.exec_driver_sql(
            "SELECT name, frames_ok, crashes, last_crash_at FROM instances"
        ).all() == [("node-0", 5, 0, None)]
    # And back, and forth again (the view is rebuilt each way on PostgreSQL).
    command.downgrade(_alembic_config(engine), "0005")
    assert upgrade_to_head(engine) == head_revision()
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT size_bytes FROM v_results").all() == [(1234,)]
    engine.dispose()


def test_any_real_file_size_and_a_long_camera_name_are_stored(database_url: str, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import select

    from watcher.store.records import ResultRecord
    from watcher.store.schema import Result
    from watcher.store.writes import insert_new_rows

    (tmp_path / "data").mkdir()
    engine = make_engine(database_url, busy_timeout_ms=1000)
    upgrade_to_head(engine)
    now = datetime.now(UTC)
    # A non-UTF-8 folder name escaped byte by byte (\xNN) grows four times over.
    camera = "".join(f"\\x{byte:02x}" for byte in range(100))
    row = ResultRecord(
        frame_key="f" * 32,
        camera=camera,
        source_path=f"{camera}/huge.bmp",
        stored_path=f"/failed/{camera}/huge.bmp",
        size_bytes=3_000_000_000,
        received_at=now,
        processed_at=now,
        status="failed",
        error="too large: 3000000000 bytes",
    )
    with engine.begin() as connection:
        assert insert_new_rows(connection, [row]) == {"f" * 32}
    with engine.connect() as connection:
        stored = connection.execute(select(Result.size_bytes, Result.camera)).one()
        in_view = connection.exec_driver_sql("SELECT size_bytes FROM v_results").scalar()
    engine.dispose()
    assert tuple(stored) == (3_000_000_000, camera) and len(camera) == 400
    assert in_view == 3_000_000_000


def test_a_database_a_newer_version_migrated_is_one_line_never_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A site rolled back to an older release (or a second host still on one) finds a revision
    # it has no script for: `db upgrade` and `watch` must not die in Alembic, and the readers
    # must not send the operator to `db upgrade`, which cannot help.
    import sqlite3

    from tests.helpers import write_config
    from watcher.commands.main import main

    config = write_config(tmp_path / "config.toml", {"display": {"timezone": "UTC"}})
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    with sqlite3.connect(tmp_path / "data" / "results.sqlite3") as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0099_from_the_future'")
    connection.close()
    capsys.readouterr()
    for command in (["db", "upgrade"], ["results"], ["status"]):
        assert main([*command, "--config", str(config)]) == 1, command
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "Traceback" not in error, error
        assert "0099_from_the_future" in error and "newer" in error and "db upgrade" not in error, error


def test_reviews_left_by_deleted_rows_are_gone_before_a_new_row_can_take_their_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A database from before supersede deleted a failed row's reviews with it: SQLite never ran
    # the cascade, so row 3's review outlived it. Without AUTOINCREMENT the next row inserted gets
    # id 3 again and would inherit a label no operator gave it.
    from alembic import command

    from watcher.store.migrate import _alembic_config

    database = tmp_path / "r.sqlite3"
    engine = make_engine(f"sqlite:///{database}", busy_timeout_ms=1000)
    command.upgrade(_alembic_config(engine), "0009")
    with engine.begin() as connection:
        for key in ("k1", "k2", "k3"):
            connection.exec_driver_sql(
                "INSERT INTO results (frame_key, source_path, stored_path, received_at, processed_at, "
                f"status) VALUES ('{key}', 'cam/{key}.bmp', '/p/cam/{key}.bmp', '2026-11-25 08:00:00', "
                "'2026-11-25 08:00:01', 'ok')"
            )
        for result_id, label in ((1, "male"), (2, "unsure"), (3, "female"), (2, "female")):
            connection.exec_driver_sql(
                "INSERT INTO reviews (result_id, label, reviewer, reviewed_at) "
                f"VALUES ({result_id}, '{label}', 'alice', '2026-11-25 09:00:00')"
            )
        connection.exec_driver_sql("DELETE FROM results WHERE id IN (2, 3)")  # as supersede did

    with caplog.at_level("WARNING"):
        assert upgrade_to_head(engine) == head_revision()

    assert query(database, "SELECT result_id, label FROM reviews ORDER BY id") == [(1, "male")]
    assert "deleted 3 reviews of rows no longer in results" in caplog.text
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO results (frame_key, source_path, stored_path, received_at, processed_at, status) "
            "VALUES ('k4', 'cam/k4.bmp', '/p/cam/k4.bmp', '2026-11-26 08:00:00', '2026-11-26 08:00:01', 'ok')"
        )
    engine.dispose()
    assert query(database, "SELECT id FROM results WHERE frame_key = 'k4'") == [(2,)]
    assert query(database, "SELECT count(*) FROM reviews WHERE result_id = 2") == [(0,)]


def test_a_start_waits_for_another_process_s_migration_past_the_lock_timeout(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Daemons starting together on one PostgreSQL: one migrates, the others wait for its advisory
    # lock. They gave up at the lock_timeout (database.busy_timeout_ms) and stopped: a migration
    # longer than that (an index on a large table) failed every other start.
    other = create_engine(postgres_url)
    engine = make_engine(postgres_url, busy_timeout_ms=200)
    outcome: list[object] = []

    def start() -> None:
        try:
            outcome.append(upgrade_to_head(engine))
        except StorageUnavailable as error:
            outcome.append(error)

    with other.connect() as migrating, caplog.at_level(logging.INFO, logger="watcher.store.migrate"):
        migrating.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")
        waiting = threading.Thread(target=start)
        waiting.start()
        wait_for(lambda: "is migrating the database: waiting" in caplog.text or outcome, timeout=30)
        held_since = time.monotonic()
        # Held well past the waiting engine's 200 ms lock_timeout before it is let go.
        wait_for(lambda: time.monotonic() - held_since > 1.0 or outcome, timeout=30)
        assert outcome == [], "gave up while another process still migrated"
        migrating.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")
        waiting.join(timeout=60)
    engine.dispose()
    other.dispose()
    assert outcome == [head_revision()]
    assert "the other process's migration is done" in caplog.text


def test_a_migration_lock_held_too_long_is_one_clear_error(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrate, "MIGRATION_WAIT_S", 0.5)
    other = create_engine(postgres_url)
    engine = make_engine(postgres_url, busy_timeout_ms=200)
    with other.connect() as stuck:
        stuck.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")
        with pytest.raises(StorageUnavailable, match="migrating the database for over 0.5 s"):
            upgrade_to_head(engine)
        stuck.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")
    engine.dispose()
    other.dispose()
