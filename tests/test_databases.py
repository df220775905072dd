"""SQLite and PostgreSQL behave the same: migrations, idempotency keys, lost connections.

PostgreSQL is the machine's real server (127.0.0.1:5432, database `test`); each test gets a
schema of its own (see `postgres_url` in conftest).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, text
from sqlalchemy.exc import OperationalError

from model.synthetic import write_bmp
from tests.helpers import RunningDaemon, files_under, query_url, wait_for
from watcher.backfill.report import BackfillReport, store_records
from watcher.commands.main import main
from watcher.pipeline.recording import Recorder
from watcher.pipeline.stages import Classified, Stored
from watcher.store.copy import copy_results, copy_reviews
from watcher.store.engine import make_engine
from watcher.store.errors import translate
from watcher.store.migrate import head_revision, upgrade_to_head
from watcher.store.records import ResultRecord
from watcher.store.reviews import ReviewLabel, record_review
from watcher.store.schema import Review
from watcher.store.writes import insert_new_rows


def _row(key: str) -> ResultRecord:
    now = datetime.now(UTC)
    return ResultRecord(
        frame_key=key,
        source_path=f"cam/{key}.bmp",
        stored_path=f"/processed/cam/{key}.bmp",
        received_at=now,
        processed_at=now,
        status="ok",
    )


def test_a_frame_key_gets_one_row_however_often_it_is_inserted(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    engine = make_engine(database_url, busy_timeout_ms=1000)
    upgrade_to_head(engine)
    with engine.begin() as connection:
        assert insert_new_rows(connection, [_row("a"), _row("b")]) == {"a", "b"}
    # A retried batch (its first commit's answer was lost) inserts only what is new.
    with engine.begin() as connection:
        assert insert_new_rows(connection, [_row("b"), _row("a"), _row("c")]) == {"c"}
    engine.dispose()
    assert query_url(database_url, "SELECT frame_key FROM results ORDER BY frame_key") == [
        ("a",),
        ("b",),
        ("c",),
    ]


def _archived(key: str, name: str, status: str) -> ResultRecord:
    ok = status == "ok"
    return replace(
        _row(key),
        source="archive:/archive",
        source_path=name,
        stored_path=f"/archive/{name}",
        status=status,
        label="male" if ok else None,
        probability=0.9 if ok else None,
    )


def test_a_failed_row_superseded_takes_its_reviews_along(database_url: str, tmp_path: Path) -> None:
    # A backfill's failed row was reviewed (versions before reviews of failed rows were refused
    # stored them); a later run classifies the file ok and deletes that row. Its review must go
    # too: on SQLite (no foreign keys enforced, ids reused) it would otherwise label the next row
    # inserted, a different file.
    (tmp_path / "data").mkdir()
    engine = make_engine(database_url, busy_timeout_ms=1000)
    upgrade_to_head(engine)
    store_records(engine, [_archived("k1", "x.bmp", "failed")], BackfillReport())
    [(failed_id,)] = query_url(database_url, "SELECT id FROM results")
    with engine.begin() as connection:
        review = {
            "result_id": failed_id,
            "label": "female",
            "reviewer": "alice",
            "reviewed_at": datetime.now(UTC),
        }
        connection.execute(insert(Review).values(review))

    again = [_archived("k0", "other.bmp", "ok"), _archived("k2", "x.bmp", "ok")]
    store_records(engine, again, BackfillReport())
    engine.dispose()
    assert query_url(database_url, "SELECT source_path, status FROM results ORDER BY source_path") == [
        ("other.bmp", "ok"),
        ("x.bmp", "ok"),
    ]
    assert query_url(database_url, "SELECT count(*) FROM reviews") == [(0,)]


@pytest.mark.parametrize(
    ("operator_set", "within_s"),
    [
        pytest.param("", 40.0, id="default_10s"),
        pytest.param("?connect_timeout=1", 8.0, id="the_urls_own_1s"),
        pytest.param("PGCONNECT_TIMEOUT=1", 8.0, id="libpqs_environment_1s"),
        pytest.param("service", 8.0, id="a_named_services_1s"),
    ],
)
def test_a_server_that_never_answers_is_given_up_not_waited_for(
    operator_set: str, within_s: float, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket
    import time

    # A port whose kernel completes the handshake and whose server never says a word (a stopped
    # host behind a live pooler): libpq alone would wait for ever, and the daemon's loop with it.
    # What the operator set, in the URL or where libpq looks for it, wins over the 10 s default.
    with socket.create_server(("127.0.0.1", 0), backlog=8) as silent:
        port = silent.getsockname()[1]
        url = f"postgresql+psycopg://cctv@127.0.0.1:{port}/test"
        if operator_set.startswith("?"):
            url += operator_set
        elif operator_set == "service":
            (tmp_path / "pg_service.conf").write_text(
                f"[silent]\nhost=127.0.0.1\nport={port}\nuser=cctv\ndbname=test\nconnect_timeout=1\n"
            )
            monkeypatch.setenv("PGSERVICEFILE", str(tmp_path / "pg_service.conf"))
            url = "postgresql+psycopg:///?service=silent"
        elif operator_set:
            monkeypatch.setenv(*operator_set.split("="))
        engine = make_engine(url, busy_timeout_ms=1000)
        outcome: list[BaseException] = []

        def connect() -> None:
            try:
                engine.connect().close()
            except BaseException as error:  # noqa: BLE001 - the test reads it
                outcome.append(error)

        started = time.monotonic()
        thread = threading.Thread(target=connect, daemon=True)
        thread.start()
        thread.join(within_s)
        assert not thread.is_alive(), f"still connecting after {within_s} s"
        assert time.monotonic() - started >= 0.5  # given up by the timeout, not refused at once
        assert outcome and isinstance(outcome[0], OperationalError), outcome
        engine.dispose()


@pytest.mark.parametrize(
    ("operator_set", "expected"),
    [("", "cctv-gender"), ("application_name=site-a", "site-a"), ("PGAPPNAME=site-b", "site-b")],
)
def test_the_connections_name_is_the_operators_if_set(
    postgres_url: str, operator_set: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import text

    url = postgres_url
    if operator_set.startswith("application_name"):
        url += f"&{operator_set}"
    elif operator_set:
        monkeypatch.setenv(*operator_set.split("="))
    engine = make_engine(url, busy_timeout_ms=1000)
    with engine.connect() as connection:
        assert connection.execute(text("SHOW application_name")).scalar() == expected
    engine.dispose()


def test_a_named_services_entry_is_left_to_it_and_its_connect_timeout_handed_to_psycopg(
    tmp_path: Path,
) -> None:
    from sqlalchemy import make_url

    from watcher.store.engine import LIBPQ_TIMEOUTS, libpq_defaults

    user_file, system = tmp_path / "mine.conf", tmp_path / "etc"
    user_file.write_text(
        "# the site's\n[other]\nconnect_timeout=99\n\n"
        "[site] # the cameras\nkeepalives_idle=5\nconnect_timeout=3\nconnect_timeout=30\n"
    )
    system.mkdir()
    (system / "pg_service.conf").write_text("[shared]\ntcp_user_timeout=1000\n")
    environment = {"PGSERVICEFILE": str(user_file), "PGSYSCONFDIR": str(system)}
    url = make_url("postgresql+psycopg:///?service=site")
    set_here = libpq_defaults(url, environment=environment)
    assert "keepalives_idle" not in set_here and set_here["connect_timeout"] == "3"
    assert set_here["tcp_user_timeout"] == LIBPQ_TIMEOUTS["tcp_user_timeout"]
    # Not in the user's file: the system's, as libpq looks.
    shared = libpq_defaults(make_url("postgresql+psycopg:///?service=shared"), environment=environment)
    assert "tcp_user_timeout" not in shared and shared["connect_timeout"] == LIBPQ_TIMEOUTS["connect_timeout"]
    # The URL's own value outranks the service's, as in libpq.
    mine = libpq_defaults(
        make_url("postgresql+psycopg:///?service=site&connect_timeout=7"), environment=environment
    )
    assert "connect_timeout" not in mine
    # Without PGSERVICEFILE, the user's file is ~/.pg_service.conf, ~ being the given HOME.
    home = tmp_path / "home"
    home.mkdir()
    (home / ".pg_service.conf").write_text("[homely]\nconnect_timeout=4\n")
    at_home = {"HOME": str(home), "PGSYSCONFDIR": str(system)}
    assert (
        libpq_defaults(make_url("postgresql+psycopg:///?service=homely"), environment=at_home)[
            "connect_timeout"
        ]
        == "4"
    )


def test_daemons_starting_together_migrate_once(postgres_url: str) -> None:
    # Three hosts starting at once on an empty database: one migrates, the others wait and find
    # the schema current.
    results: list[str | None] = []
    errors: list[BaseException] = []

    def start() -> None:
        engine = make_engine(postgres_url, busy_timeout_ms=1000)
        try:
            results.append(upgrade_to_head(engine))
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=start) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == [] and results == [head_revision()] * 3


def test_a_commit_whose_answer_was_lost_is_not_counted_twice(
    start_daemon: Callable[..., RunningDaemon],
    tmp_path: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The rows are committed, then the connection drops before the daemon hears so (simulated
    # here: real code raises what psycopg raises for a lost server). The batch is retried after
    # reconnecting and finds its rows.
    original = Recorder.record
    lost: list[bool] = []

    def commit_then_lose_the_answer(self: Recorder, classified: list[Classified]) -> list[Stored]:
        stored = original(self, classified)
        if not lost:
            lost.append(True)
            # What the store's boundary makes of psycopg's error for a dropped connection.
            raise translate(
                OperationalError(
                    "COMMIT",
                    None,
                    ConnectionError("server closed the connection unexpectedly"),
                    connection_invalidated=True,
                )
            )
        return stored

    monkeypatch.setattr(Recorder, "record", commit_then_lose_the_answer)
    start_daemon(batch={"size": 4, "max_wait_ms": 50}, database={"url": database_url})
    for index in range(4):
        write_bmp(tmp_path / "inbox" / "cam" / f"{index}.bmp", seed=index)

    wait_for(lambda: len(files_under(tmp_path / "processed")) == 4, timeout=30, what="all four moved")
    rows = query_url(database_url, "SELECT source_path, stored_path FROM results ORDER BY source_path")
    assert [source for source, _ in rows] == [f"cam/{index}.bmp" for index in range(4)]
    assert all(Path(stored).is_file() for _, stored in rows)
    assert lost == [True]


def _cluster() -> list[str] | None:
    """`pg_ctlcluster VERSION main`, when this machine runs its PostgreSQL that way (as root)."""
    versions = (
        sorted(path.name for path in Path("/etc/postgresql").glob("*"))
        if Path("/etc/postgresql").is_dir()
        else []
    )
    if not versions or shutil.which("pg_ctlcluster") is None:
        return None
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main"]


@pytest.fixture
def postgres_control() -> Iterator[list[str]]:
    cluster = _cluster()
    if cluster is None:
        pytest.skip("needs the local PostgreSQL cluster under pg_ctlcluster to restart it")
    yield cluster
    # Whatever happened in the test, leave the server running for the rest of the suite.
    subprocess.run([*cluster, "start"], check=False, capture_output=True)


def test_the_daemon_survives_a_postgresql_restart(
    start_daemon: Callable[..., RunningDaemon],
    tmp_path: Path,
    postgres_url: str,
    postgres_control: list[str],
) -> None:
    running = start_daemon(batch={"size": 4, "max_wait_ms": 50}, database={"url": postgres_url})
    for index in range(4):
        write_bmp(tmp_path / "inbox" / "cam" / f"before-{index}.bmp", seed=index)
    wait_for(lambda: len(files_under(tmp_path / "processed")) == 4, timeout=30, what="the first frames")

    subprocess.run([*postgres_control, "stop", "--", "-m", "fast"], check=True, capture_output=True)
    try:
        for index in range(6):
            write_bmp(tmp_path / "inbox" / "cam" / f"during-{index}.bmp", seed=10 + index)
        # The batch cannot be committed: it waits, claimed, and nothing of it is moved.
        wait_for(lambda: running.daemon.parked_frames > 0, timeout=30, what="a parked batch")
        assert len(files_under(tmp_path / "processed")) == 4
    finally:
        subprocess.run([*postgres_control, "start"], check=True, capture_output=True)

    wait_for(
        lambda: len(files_under(tmp_path / "processed")) == 10, timeout=90, what="the rest after the restart"
    )
    rows = query_url(postgres_url, "SELECT source_path FROM results")
    assert sorted(source for (source,) in rows) == sorted(
        [f"cam/before-{index}.bmp" for index in range(4)] + [f"cam/during-{index}.bmp" for index in range(6)]
    )
    assert running.thread.is_alive()


def test_db_copy_moves_sqlite_results_to_postgresql_and_can_be_repeated(
    make_config: Callable[..., Path], tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sqlite_config = make_config()
    for index in range(5):
        write_bmp(tmp_path / "inbox" / "cam-01" / f"{index}.bmp", seed=index)
    (tmp_path / "inbox" / "cam-01" / "bad.bmp").write_bytes(b"not an image")
    assert main(["watch", "--once", "--config", str(sqlite_config)]) == 0
    capsys.readouterr()
    sqlite_url = f"sqlite:///{tmp_path / 'data' / 'results.sqlite3'}"
    reviewing = make_engine(sqlite_url, busy_timeout_ms=1000)
    # Classified rows only (a failed one cannot be reviewed): bad.bmp's id depends on the batch's order.
    ok = [
        result_id
        for (result_id,) in query_url(sqlite_url, "SELECT id FROM results WHERE status = 'ok' ORDER BY id")
    ]
    for result_id, label in (
        (ok[1], ReviewLabel.FEMALE),
        (ok[1], ReviewLabel.UNSURE),
        (ok[3], ReviewLabel.MALE),
    ):
        record_review(reviewing, result_id=result_id, label=label, reviewer="alice")
    reviewing.dispose()

    assert main(["db", "copy", "--to", postgres_url, "--config", str(sqlite_config)]) == 0
    first = capsys.readouterr().out
    assert "copied 6 rows" in first and "and 3 reviews" in first
    assert main(["db", "copy", "--to", postgres_url, "--config", str(sqlite_config)]) == 0
    repeated = capsys.readouterr().out
    assert "copied 0 rows" in repeated and "6 were already there" in repeated and "and 0 reviews" in repeated
    # Reviews land on the same frames (ids may differ between the databases; frame keys do not).
    reviews = (
        "SELECT r.frame_key, v.label, v.reviewer FROM reviews v "
        "JOIN results r ON r.id = v.result_id ORDER BY v.id"
    )
    assert query_url(postgres_url, reviews) == query_url(sqlite_url, reviews)

    columns = (
        "frame_key, camera, source_path, stored_path, sha256, label, probability, status, error, embedding"
    )
    copied = sorted(query_url(postgres_url, f"SELECT {columns} FROM results"))
    assert copied == sorted(query_url(sqlite_url, f"SELECT {columns} FROM results"))
    # Times survive the trip unchanged (UTC on both sides).
    times = "SELECT frame_key, processed_at, received_at FROM results ORDER BY frame_key"
    assert [(key, str(a)[:26], str(b)[:26]) for key, a, b in query_url(postgres_url, times)] == [
        (key, str(a)[:26], str(b)[:26]) for key, a, b in query_url(sqlite_url, times)
    ]

    # The same query commands, pointed at PostgreSQL, answer the same.
    make_config(database={"url": postgres_url})
    assert main(["results", "--format", "csv", "--config", str(tmp_path / "config.toml")]) == 0
    on_postgres = capsys.readouterr().out
    make_config()
    assert main(["results", "--format", "csv", "--config", str(tmp_path / "config.toml")]) == 0
    on_sqlite = capsys.readouterr().out
    assert on_postgres == on_sqlite, (on_postgres, on_sqlite)


def test_db_copy_keeps_the_rows_in_their_order(database_url: str, tmp_path: Path) -> None:
    # Each batch goes in frame key order (random uuids), batch after batch: the target's ids must
    # follow the source's, or `results` (newest first, by id) lists a copy's rows shuffled.
    source_url = f"sqlite:///{tmp_path / 'source.sqlite3'}"
    source = make_engine(source_url, busy_timeout_ms=1000)
    upgrade_to_head(source)
    for batch in (["d", "b"], ["c", "a"], ["e"]):
        with source.begin() as connection:
            insert_new_rows(connection, [_row(key) for key in batch])
    (tmp_path / "data").mkdir()
    target = make_engine(database_url, busy_timeout_ms=1000)

    assert copy_results(source, target).copied == 5
    source.dispose()
    target.dispose()
    in_order = "SELECT frame_key FROM results ORDER BY id"
    assert query_url(database_url, in_order) == query_url(source_url, in_order) == [(key,) for key in "bdace"]


def test_a_review_of_a_row_stored_during_a_copy_waits_for_the_next_run(
    database_url: str, tmp_path: Path
) -> None:
    # The rows are read in one snapshot, the reviews in a later one: a frame the daemon stored
    # and an operator reviewed in between has a review but no row in the target yet.
    source_url = f"sqlite:///{tmp_path / 'source.sqlite3'}"
    source = make_engine(source_url, busy_timeout_ms=1000)
    upgrade_to_head(source)
    with source.begin() as connection:
        insert_new_rows(connection, [_row("a")])
    (tmp_path / "data").mkdir()
    target = make_engine(database_url, busy_timeout_ms=1000)
    assert copy_results(source, target).copied == 1
    with source.begin() as connection:
        insert_new_rows(connection, [_row("b")])
    [(late_id,)] = query_url(source_url, "SELECT id FROM results WHERE frame_key = 'b'")
    record_review(source, result_id=late_id, label=ReviewLabel.MALE, reviewer="alice")

    assert copy_reviews(source, target) == 0  # was a KeyError, the copy's traceback
    again = copy_results(source, target)
    assert (again.copied, again.reviews_copied) == (1, 1)
    source.dispose()
    target.dispose()
    reviewed = "SELECT r.frame_key, v.label FROM reviews v JOIN results r ON r.id = v.result_id"
    assert query_url(database_url, reviewed) == [("b", "male")]


def test_db_copy_refuses_a_bad_target(
    make_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config()
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    assert main(["db", "copy", "--to", "nosuchdb://x", "--config", str(config)]) == 1
    assert "--to:" in capsys.readouterr().err


def test_db_copy_from_a_shell_whose_folder_was_removed_copies_to_an_absolute_path(
    make_config: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A shell left in a folder removed since: an absolute --to failed on the working folder it
    never needed, with only `No such file or directory`."""
    config = make_config()
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    capsys.readouterr()

    assert main(["db", "copy", "--to", f"sqlite:///{tmp_path / 'copy.db'}", "--config", str(config)]) == 0
    assert (tmp_path / "copy.db").is_file()
    capsys.readouterr()
    assert main(["db", "copy", "--to", "sqlite:///copy.db", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "cctv-gender: error: --to: a relative SQLite path, and the folder this command runs in is gone: "
        "name the file from /"
    ], err


def test_db_copy_takes_a_relative_sqlite_path_from_the_folder_it_runs_in_and_names_the_file(
    make_config: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--to sqlite:///copy.db`: the report said `sqlite:///copy.db`, naming no folder (the config's,
    as for database.url? the shell's?), and the same database named relatively passed for another."""
    config = make_config()
    source = tmp_path / "data" / "results.sqlite3"
    (tmp_path / "data").mkdir()
    source_url = f"sqlite:///{source}"
    upgrade_to_head(engine := make_engine(source_url, busy_timeout_ms=1000))
    with engine.begin() as connection:
        insert_new_rows(connection, [_row("a"), _row("b")])
    engine.dispose()
    here = tmp_path / "elsewhere"
    here.mkdir()
    monkeypatch.chdir(here)
    capsys.readouterr()

    assert main(["db", "copy", "--to", "sqlite:///copy.db", "--config", str(config)]) == 0

    said = capsys.readouterr().out
    assert said.startswith(f"copied 2 rows to sqlite:///{here / 'copy.db'} in "), said
    assert query_url(f"sqlite:///{here / 'copy.db'}", "SELECT frame_key FROM results ORDER BY id") == [
        ("a",),
        ("b",),
    ]
    assert not (tmp_path / "copy.db").exists()  # not beside the config

    monkeypatch.chdir(tmp_path / "data")
    with pytest.raises(SystemExit) as refused:  # a bad command line: exit 2 (was 1)
        main(["db", "copy", "--to", "sqlite:///results.sqlite3", "--config", str(config)])
    assert refused.value.code == 2
    assert "names the database this config already uses" in capsys.readouterr().err


@pytest.mark.parametrize(
    "spelling",
    [
        pytest.param("sqlite:///{tmp}/elsewhere/../data/results.sqlite3", id="dot_dot"),
        pytest.param("sqlite:///{tmp}//data/results.sqlite3", id="double_slash"),
        pytest.param("sqlite:///{tmp}/link.db", id="symlink"),
        pytest.param("sqlite:///{tmp}/hard.db", id="hard_link"),
        pytest.param("sqlite:///file:{tmp}/data/results.sqlite3?uri=true", id="uri_form"),
        pytest.param("sqlite+pysqlite:///{tmp}/data/results.sqlite3", id="driver_named"),
    ],
)
def test_db_copy_refuses_the_database_it_copies_from_by_any_spelling(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], spelling: str
) -> None:
    """Only the same text was refused: the same file through `..`, a link or the URI form "copied
    0 rows (2 were already there)" onto itself, exit 0."""
    config = make_config()
    (tmp_path / "data").mkdir()
    (tmp_path / "elsewhere").mkdir()
    source = tmp_path / "data" / "results.sqlite3"
    upgrade_to_head(engine := make_engine(f"sqlite:///{source}", busy_timeout_ms=1000))
    with engine.begin() as connection:
        insert_new_rows(connection, [_row("a"), _row("b")])
    engine.dispose()
    (tmp_path / "link.db").symlink_to(source)
    (tmp_path / "hard.db").hardlink_to(source)
    capsys.readouterr()

    with pytest.raises(SystemExit) as refused:
        main(["db", "copy", "--to", spelling.format(tmp=tmp_path), "--config", str(config)])

    captured = capsys.readouterr()
    assert refused.value.code == 2 and "copied" not in captured.out, captured
    assert captured.err.count("\n") == 1, captured.err
    assert "names the database this config already uses" in captured.err, captured.err


@pytest.mark.parametrize(
    ("target", "said"),
    [
        pytest.param("sqlite:///{tmp}/data/results.sqlite3-wal", "names the -wal file", id="wal"),
        pytest.param("sqlite:///{tmp}/data/results.sqlite3-shm", "names the -shm file", id="shm"),
        pytest.param("sqlite:///{tmp}/data/results.sqlite3-journal", "names the -journal file", id="journal"),
        pytest.param(
            "sqlite:///{tmp}/elsewhere/../data/results.sqlite3-wal", "names the -wal file", id="dot_dot"
        ),
        pytest.param(
            "sqlite:///file:{tmp}/data/results.sqlite3-wal?uri=true", "names the -wal file", id="uri"
        ),
        # The other way round: the source would be the target's WAL.
        pytest.param("sqlite:///{tmp}/data/results", "whose -wal file would be", id="source_is_its_wal"),
    ],
)
def test_db_copy_refuses_a_side_file_of_the_database_it_copies_from(
    make_config: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    target: str,
    said: str,
) -> None:
    """`--to .../results.sqlite3-wal` "copied 2 rows", exit 0, and the file was gone: SQLite took it
    for the source's WAL (checkpointed and deleted it); into `-shm` it failed half-way (exit 1)."""
    source = tmp_path / "data" / ("results.sqlite3" if "results.sqlite3" in target else "results-wal")
    config = make_config(database={"url": f"sqlite:///{source}"})
    (tmp_path / "data").mkdir()
    (tmp_path / "elsewhere").mkdir()
    upgrade_to_head(engine := make_engine(f"sqlite:///{source}", busy_timeout_ms=1000))
    with engine.begin() as connection:
        insert_new_rows(connection, [_row("a"), _row("b")])
    engine.dispose()
    capsys.readouterr()

    with pytest.raises(SystemExit) as refused:
        main(["db", "copy", "--to", target.format(tmp=tmp_path), "--config", str(config)])

    captured = capsys.readouterr()
    assert refused.value.code == 2 and "copied" not in captured.out, captured
    assert captured.err.count("\n") == 1 and said in captured.err, captured.err
    assert query_url(f"sqlite:///{source}", "SELECT count(*) FROM results") == [(2,)]
    made = {path.name for path in (tmp_path / "data").iterdir()}
    assert made <= {source.name + suffix for suffix in ("", "-wal", "-shm", "-journal")}, made


def test_db_copy_refuses_its_own_postgresql_database_under_another_host_name(
    make_config: Callable[..., Path], postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`localhost` for 127.0.0.1, or the port left out, "copied 0 rows (2 were already there)"
    onto the source itself, exit 0; another schema of the same database is still copied to."""
    config = make_config(database={"url": postgres_url})
    upgrade_to_head(engine := make_engine(postgres_url, busy_timeout_ms=1000))
    with engine.begin() as connection:
        insert_new_rows(connection, [_row("a"), _row("b")])
    engine.dispose()
    capsys.readouterr()
    for spelling in (postgres_url.replace("127.0.0.1", "localhost"), postgres_url.replace(":5432/", "/")):
        assert spelling != postgres_url
        with pytest.raises(SystemExit) as refused:
            main(["db", "copy", "--to", spelling, "--config", str(config)])
        captured = capsys.readouterr()
        assert refused.value.code == 2 and "copied" not in captured.out, captured
        assert "names the database this config already uses" in captured.err, captured.err

    schema = postgres_url.rsplit("%3D", 1)[1]
    admin = make_engine(postgres_url, busy_timeout_ms=1000)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}_copy"'))
    try:
        assert main(["db", "copy", "--to", f"{postgres_url}_copy", "--config", str(config)]) == 0
        assert capsys.readouterr().out.startswith("copied 2 rows to ")
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}_copy" CASCADE'))
        admin.dispose()


@pytest.mark.parametrize(
    ("target", "said"),
    [
        # A dialect whose driver is not installed: one line, like database.url's, no traceback.
        ("mysql://user@host/db", "driver is not installed (MySQLdb)"),
        # Every row "copied" into a database that is gone when the command ends.
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
    ],
)
def test_db_copy_refuses_a_target_it_cannot_use_in_one_line(
    make_config: Callable[..., Path], capsys: pytest.CaptureFixture[str], target: str, said: str
) -> None:
    config = make_config()
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["db", "copy", "--to", target, "--config", str(config)]) == 1
    captured = capsys.readouterr()
    assert "copied" not in captured.out
    assert captured.err.count("\n") == 1 and "--to:" in captured.err and said in captured.err, captured.err


@pytest.mark.parametrize(
    ("target", "said"),
    [
        ("sqlite:///{tmp}/missing/dir/copy.db", "--to: no such folder {tmp}/missing/dir"),
        ("sqlite:///file:{tmp}/missing/copy.db?uri=true", "--to: no such folder {tmp}/missing"),
        ("sqlite:///{tmp}/config.toml/copy.db", "--to: {tmp}/config.toml is a file, not a folder"),
        # A folder named as the file: SQLite said only "unable to open database file", exit 1.
        ("sqlite:///{tmp}/data", "--to: {tmp}/data is a folder: name a database file in it"),
    ],
    ids=["missing_folder", "uri_form", "file_as_folder", "folder_as_file"],
)
def test_db_copy_names_the_missing_folder_of_a_sqlite_target(
    make_config: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    target: str,
    said: str,
) -> None:
    """Was exit 1 with SQLite's own words, `cannot copy to ...: unable to open database file`."""
    config = make_config()
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    capsys.readouterr()

    with pytest.raises(SystemExit) as refused:
        main(["db", "copy", "--to", target.format(tmp=tmp_path), "--config", str(config)])

    err = capsys.readouterr().err
    assert refused.value.code == 2 and err.count("\n") == 1, err
    assert said.format(tmp=tmp_path) in err, err
    assert not (tmp_path / "missing").exists()
