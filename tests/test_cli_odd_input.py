"""Odd input at the operator's surface, each found by review: one clear line, never a traceback,
and nothing a file in the registry can do holds the daemon's loop or the web pages."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers import write_config
from watcher.commands.main import main
from watcher.config import load_config
from watcher.store.opening import open_database
from watcher.web.app import create_app
from watcher.web.context import WebContext
from watcher.web.security import Gate

TOKEN = "s3cret-token-for-tests"


def _site(tmp_path: Path, **sections: object) -> Path:
    config = write_config(tmp_path / "config.toml", {"display": {"timezone": "UTC"}, **sections})
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    return config


def _one_line(main_args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(main_args) == 1, main_args
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error, error
    return error


@pytest.mark.parametrize("path", ["/healthz", "/"])
def test_web_app_survives_a_current_pointer_that_is_not_text(tmp_path: Path, path: str) -> None:
    # 047797f turned a non-UTF-8 `current` into RegistryError (a folder there is IsADirectoryError);
    # the web app handles only StorageError, and /healthz and the dashboard read the pointer when
    # no daemon instance reports its model: a 500 and a traceback in serve's log.
    config_path = _site(tmp_path)
    registry = tmp_path / "data" / "models"
    registry.mkdir(parents=True)
    (registry / "current").write_bytes(b"\xff\xfe")
    config = load_config(config_path)
    reader = open_database(config, migrate=False, read_only=True)
    writer = open_database(config, migrate=False)
    try:
        gate = Gate(token=None, token_name="local")
        app = create_app(WebContext(config=config, reader=reader, writer=writer, gate=gate))
        with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
            response = client.get(path)
        assert response.status_code != 500, (path, response.status_code, response.text[:200])
    finally:
        reader.dispose()
        writer.dispose()


def test_serve_a_listen_name_the_idna_codec_refuses_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 2dc8483 catches OSError around _bind; getaddrinfo raises UnicodeError (a ValueError) for
    # an empty or over-63-character label: "a..b", a typo'd "cctv-box..lan".
    config = _site(tmp_path, web={"token": TOKEN})
    error = _one_line(["serve", "--config", str(config), "--listen", "cctv-box..lan:8600"], capsys)
    assert "cctv-box..lan" in error


def test_db_copy_to_a_url_with_a_bad_port_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 7a0461b's guard catches ArgumentError/NoSuchModuleError/ImportError; make_url raises a bare
    # ValueError for a port that is not a number (database.url's validator turns the same into
    # a config error; --to has no validator).
    config = _site(tmp_path)
    error = _one_line(
        ["db", "copy", "--to", "postgresql+psycopg://user@host:54x2/db", "--config", str(config)], capsys
    )
    assert "--to" in error


def test_db_copy_refuses_an_in_memory_sqlite_uri(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # sqlite_file() accepts the URI form and returns Path("mem") for it, so the new in-memory
    # check passes it; SQLAlchemy opens it as a memory database: "copied N rows", then gone.
    config = _site(tmp_path)
    error = _one_line(
        ["db", "copy", "--to", "sqlite:///file:mem?mode=memory&uri=true", "--config", str(config)], capsys
    )
    assert "in-memory" in error


def test_a_database_a_newer_release_left_with_two_heads_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A newer release with an Alembic branch (two rows in alembic_version): current_revision()
    # (get_current_revision) raises alembic's CommandError before require_known_revision runs;
    # open_database does not translate it.
    config = _site(tmp_path)
    with sqlite3.connect(tmp_path / "data" / "results.sqlite3") as connection:
        connection.execute("INSERT INTO alembic_version VALUES ('0099_from_a_branch')")
    connection.close()
    for command in (["results"], ["db", "upgrade"]):
        capsys.readouterr()
        try:
            code = main([*command, "--config", str(config)])
        except Exception as error:  # noqa: BLE001
            pytest.fail(f"{command}: {type(error).__module__}.{type(error).__name__}: {error}")
        assert code == 1
        assert "0099_from_a_branch" in capsys.readouterr().err


def test_a_database_that_cannot_be_opened_never_shows_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # opening._one_line_error prints config.database_url as written (password included) for every
    # StorageError/OSError, now also NewerSchema; _open's own "not at the current schema" line
    # hides it. `watch` sends this line to the journal.
    pytest.importorskip("psycopg")
    config = write_config(
        tmp_path / "config.toml",
        {
            "display": {"timezone": "UTC"},
            "database": {"url": "postgresql+psycopg://cctv:hunter2@127.0.0.1:1/db"},
        },
    )
    error = _one_line(["results", "--config", str(config)], capsys)
    assert "hunter2" not in error, error


def test_a_current_pointer_that_is_a_fifo_does_not_hold_the_daemons_loop(tmp_path: Path) -> None:
    # HeadReloader.check runs on the daemon's loop thread between batches; current_version opens
    # `current` with read_text, which blocks on a FIFO until a writer comes: the loop (and its
    # watchdog pings) stop. d808deb covers "not text, a folder, unreadable", not this.
    import os
    import threading
    from types import SimpleNamespace

    from watcher.pipeline.head_reload import HeadReloader

    registry = tmp_path / "models"
    registry.mkdir()
    reloader = HeadReloader(registry, load=lambda: pytest.fail("nothing to load"))  # type: ignore[arg-type,return-value]
    os.mkfifo(registry / "current")
    done = threading.Event()
    worker = threading.Thread(
        target=lambda: (reloader.check(serving=SimpleNamespace(version="v1")), done.set()),  # type: ignore[arg-type]
        daemon=True,
    )
    worker.start()
    finished = done.wait(3)
    if not finished:  # let the blocked open return
        descriptor = os.open(registry / "current", os.O_WRONLY | os.O_NONBLOCK)
        os.close(descriptor)
        worker.join(3)
    assert finished, "HeadReloader.check blocked on a FIFO named current"
