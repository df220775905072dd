"""Secrets never printed back however the URL or the section is mistyped, in-memory SQLite told
apart in every URI form, and the registry's modes when the umask cannot be read (each found by
review)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import write_config
from watcher.commands.main import main
from watcher.store.engine import shown_url, sqlite_file


def _site(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "config.toml",
        {
            "display": {"timezone": "UTC"},
            "paths": {"data": str(tmp_path / "data"), "inbox": str(tmp_path / "inbox")},
        },
    )


def test_a_section_written_as_a_string_does_not_echo_the_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `database = "postgresql://..."` instead of `[database] url = ...`: the error's location is
    # `database`, not `database.url`, so describe() appends (got '<the whole URL>').
    config = tmp_path / "config.toml"
    config.write_text(
        'database = "postgresql+psycopg://cctv:hunter2@dbhost/db"\n[display]\ntimezone = "UTC"\n'
    )
    code = main(["status", "--config", str(config)])
    error = capsys.readouterr().err
    assert code != 0
    assert "hunter2" not in error, error


def test_a_web_section_written_as_a_string_does_not_echo_the_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('web = "correct-horse-battery-staple-42"\n[display]\ntimezone = "UTC"\n')
    code = main(["status", "--config", str(config)])
    error = capsys.readouterr().err
    assert code != 0
    assert "battery" not in error, error


def test_sslpassword_in_the_query_is_hidden() -> None:
    # libpq's sslpassword (the client key's passphrase) is as secret as password.
    assert "KEYPASS" not in shown_url("postgresql+psycopg://cctv@dbhost/db?sslpassword=KEYPASS")


def test_a_percent_encoded_mode_memory_uri_is_still_in_memory() -> None:
    # database part 'file:copy.db?mode=memory' (make_url decodes %3F/%3D); with uri=true pysqlite
    # hands it to sqlite3 as is: in memory. Before 7699d56 `"mode=memory" in database` caught it.
    assert sqlite_file("sqlite:///file:copy.db%3Fmode%3Dmemory?uri=true") is None


def test_db_copy_refuses_a_percent_encoded_in_memory_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _site(tmp_path)
    main(["db", "upgrade", "--config", str(config)])
    capsys.readouterr()
    code = main(
        ["db", "copy", "--to", "sqlite:///file:copy.db%3Fmode%3Dmemory?uri=true", "--config", str(config)]
    )
    out = capsys.readouterr()
    assert code != 0, out


@pytest.mark.parametrize(
    "url",
    [
        # An '@' not percent-encoded in the password: make_url splits at the first '@', so the
        # rest of the password becomes the host, printed by shown_url and by libpq's error.
        "postgresql+psycopg://cctv:p@ssw0rd-tail@127.0.0.1:1/db",
        # '@' and ':': the rest of the password is taken for a port; int()'s ValueError names it,
        # and describe() prints the message (only the "(got ...)" is left out).
        "postgresql+psycopg://cctv:p@ss:w0rd-tail@dbhost/db",
    ],
    ids=["at-sign", "at-sign-and-colon"],
)
def test_an_unencoded_password_is_not_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    pytest.importorskip("psycopg")
    config = write_config(
        tmp_path / "config.toml", {"display": {"timezone": "UTC"}, "database": {"url": url}}
    )
    code = main(["status", "--config", str(config)])
    error = capsys.readouterr().err
    assert code != 0
    assert "w0rd-tail" not in error, error
