"""`cctv-gender serve` refuses to start where it would be unsafe or cannot listen: one line, the
README's exit code, no traceback."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import seed_results
from watcher.commands.main import main


@pytest.fixture
def config(make_config: Callable[..., Path], tmp_path: Path) -> Path:
    database = tmp_path / "data" / "results.sqlite3"
    database.parent.mkdir()
    seed_results(f"sqlite:///{database}", [])
    return make_config()


@pytest.mark.parametrize("listen", ["0.0.0.0:8600", "[::]:8600", "192.0.2.10:8600", "cctv.example:8600"])
def test_a_network_address_without_a_token_is_refused(
    config: Path, listen: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--config", str(config), "--listen", listen]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "web.token" in line and listen in line and "Traceback" not in line


def test_the_same_in_the_config_file_stops_at_load(
    make_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_config(web={"listen": "0.0.0.0:8600"})
    assert main(["serve", "--config", str(path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "web.token: must be set" in line


def test_a_port_in_use_is_one_line(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", "--config", str(config), "--listen", f"127.0.0.1:{port}"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert "Address already in use" in line and f"--listen 127.0.0.1:{port}" in line


def test_a_listen_name_that_does_not_resolve_is_one_line_naming_it(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It said only "Name or service not known": which name, from where?
    (tmp_path / "data").mkdir()
    seed_results(f"sqlite:///{tmp_path / 'data' / 'results.sqlite3'}", [])
    path = make_config(web={"listen": "cctv-box.invalid:8600", "token": "s3cret-token-for-tests"})
    assert main(["serve", "--config", str(path)]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert "web.listen cctv-box.invalid:8600" in line and "Traceback" not in line


@pytest.mark.parametrize("listen", ["8600", "127.0.0.1:", "127.0.0.1:70000", ":8600"])
def test_a_malformed_listen_is_a_usage_error(
    config: Path, listen: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--config", str(config), "--listen", listen])
    assert stopped.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "HOST:PORT" in line
