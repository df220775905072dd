"""`cctv-gender selftest`: the real pipeline on generated input, and probes that change nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from watcher.commands.main import main

CHECKS = ("decode", "model", "database + migrations", "moves", "configured database", "configured inbox")


def _table(out: str) -> dict[str, str]:
    rows = {}
    for line in out.splitlines():
        for check in CHECKS:
            if line.startswith(check + " "):
                rows[check] = line[len(check) :].split()[0]
    return rows


def _site(folder: Path) -> list[str]:
    # SQLite's -wal and -shm files come and go with connections: not the site's content.
    return sorted(
        str(path.relative_to(folder))
        for path in folder.rglob("*")
        if not path.name.endswith(("-wal", "-shm"))
    )


def test_a_healthy_install_passes_and_the_site_is_left_untouched(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config()

    assert main(["selftest", "--config", str(config)]) == 0

    out = capsys.readouterr().out
    assert _table(out) == dict.fromkeys(CHECKS, "ok"), out
    assert out.rstrip().endswith("selftest passed")
    # Not the configured inbox, processed/, failed/ or database: none of them was made.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.toml"]


def test_an_existing_site_is_probed_read_only(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config()
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    (tmp_path / "inbox").mkdir()
    before = _site(tmp_path)
    capsys.readouterr()

    assert main(["selftest", "--config", str(config)]) == 0

    out = capsys.readouterr().out
    assert "schema current" in out and f"{tmp_path / 'inbox'} writable" in out
    assert _site(tmp_path) == before


def test_an_unreachable_database_fails_the_selftest(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(database={"url": "postgresql+psycopg://nobody@127.0.0.1:9/nothing"})

    assert main(["selftest", "--config", str(config)]) == 1

    out = capsys.readouterr().out
    rows = _table(out)
    assert rows["configured database"] == "FAILED" and rows["moves"] == "ok", out
    assert out.rstrip().endswith("selftest failed: configured database")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.toml"]
