"""Hostile review of 27266bf/acbe7c9 (and d808deb/4874f0c): failing reproductions, plus the cases
that held (the pointer's legitimate forms)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from model.registry import current_version, set_current
from tests.helpers import write_config
from watcher.commands.main import main
from watcher.store.engine import sqlite_file


def _site(tmp_path: Path, **sections: object) -> Path:
    config = write_config(tmp_path / "config.toml", {"display": {"timezone": "UTC"}, **sections})
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    return config


def _one_line(main_args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    code = main(main_args)
    error = capsys.readouterr().err
    assert code != 0 and error.count("\n") == 1 and "Traceback" not in error, (code, error)
    return error


# --- what held: legitimate pointers are still read ---------------------------------------------


@pytest.mark.parametrize("text", [b"v1", b"v1\n", b"v1\r\n", b"  v1 \n\n", b"v1\n" + b" " * 10_000])
def test_legitimate_pointer_forms_are_read(tmp_path: Path, text: bytes) -> None:
    (tmp_path / "current").write_bytes(text)
    assert current_version(tmp_path) == "v1"


def test_a_symlinked_pointer_is_read(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("v1\n")
    (tmp_path / "current").symlink_to(tmp_path / "elsewhere")
    assert current_version(tmp_path) == "v1"


# --- findings ---------------------------------------------------------------------------------


def test_the_pointer_is_group_readable_under_the_units_umask(tmp_path: Path) -> None:
    # systemd/cctv-gender.service: UMask=0027, "Group cctv-gender (operators) may read the database
    # and registry". _write_atomically writes `current` through mkstemp: always 0600. An operator
    # in the group then cannot read it, and since 27266bf `status` reads it even while a daemon
    # runs (_served is unconditional; before, only when no daemon reported): a healthy site's
    # status says "the served head cannot be known (a daemon would not start)" and exits 1.
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "head.keras").write_bytes(b"")
    old = os.umask(0o027)
    try:
        set_current(tmp_path, "v1")
    finally:
        os.umask(old)
    mode = (tmp_path / "current").stat().st_mode & 0o777
    assert mode & 0o040, oct(mode)


def test_a_sqlite_uri_file_under_a_folder_named_mode_memory_is_a_file(tmp_path: Path) -> None:
    # engine.sqlite_file: `"mode=memory" in database` looks at the path, not the query; the path
    # below is a real file to SQLite (file:/.../mode=memory-archive/results.db).
    folder = tmp_path / "mode=memory-archive"
    url = f"sqlite:///file:{folder}/results.db?uri=true"
    assert sqlite_file(url) == folder / "results.db"


def test_db_copy_to_a_real_file_under_a_folder_named_mode_memory_is_not_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _site(tmp_path)
    folder = tmp_path / "mode=memory-archive"
    folder.mkdir()
    capsys.readouterr()
    code = main(["db", "copy", "--to", f"sqlite:///file:{folder}/copy.db?uri=true", "--config", str(config)])
    assert code == 0, capsys.readouterr().err


def test_a_memdb_vfs_uri_is_in_memory(tmp_path: Path) -> None:
    # `vfs=memdb` keeps the database in memory, each connection its own (a name without a leading
    # "/"): db copy --to would report every row copied, then nothing is there.
    assert sqlite_file("sqlite:///file:copy.db?uri=true&vfs=memdb") is None


def test_a_password_in_the_urls_query_is_hidden_in_open_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # libpq takes `?password=`; render_as_string(hide_password=True) hides only the user-info one.
    pytest.importorskip("psycopg")
    config = write_config(
        tmp_path / "config.toml",
        {
            "display": {"timezone": "UTC"},
            "database": {"url": "postgresql+psycopg://cctv@127.0.0.1:1/db?password=hunter2"},
        },
    )
    error = _one_line(["results", "--config", str(config)], capsys)
    assert "hunter2" not in error, error


def test_a_url_with_a_bad_port_never_shows_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # config.errors.describe appends "(got '<input>')" to every validator message: the whole URL.
    config = write_config(
        tmp_path / "config.toml",
        {
            "display": {"timezone": "UTC"},
            "database": {"url": "postgresql+psycopg://cctv:hunter2@dbhost:54x2/db"},
        },
    )
    error = _one_line(["results", "--config", str(config)], capsys)
    assert "hunter2" not in error, error


def test_a_refused_web_token_is_not_echoed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(
        tmp_path / "config.toml",
        {"display": {"timezone": "UTC"}, "web": {"token": "correct horse battery staple 42"}},
    )
    error = _one_line(["status", "--config", str(config)], capsys)
    assert "battery staple" not in error, error


def test_a_fifo_metadata_file_does_not_hold_the_daemons_reload(tmp_path: Path) -> None:
    # 27266bf reads `current` without waiting; the reloader's load (load_serving_head ->
    # HeadMetadata.read -> read_text) then opens <version>/metadata.json, which blocks on a FIFO:
    # the daemon's loop (and its watchdog pings) stop at the next promotion or SIGHUP.
    from model.serving import load_serving_head

    registry = tmp_path / "models"
    (registry / "v1").mkdir(parents=True)
    (registry / "v1" / "head.keras").write_bytes(b"")
    os.mkfifo(registry / "v1" / "metadata.json")
    (registry / "current").write_text("v1\n")
    done = threading.Event()

    def load() -> None:
        try:
            load_serving_head(registry, clip=None, prompts={})  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001, S110
            pass
        done.set()

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    finished = done.wait(3)
    if not finished:
        descriptor = os.open(registry / "v1" / "metadata.json", os.O_WRONLY | os.O_NONBLOCK)
        os.close(descriptor)
        worker.join(3)
    assert finished, "loading the served head blocked on a FIFO metadata.json"
