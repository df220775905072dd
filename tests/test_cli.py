from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from model.synthetic import write_bmp
from tests.helpers import write_config
from watcher.commands.main import main
from watcher.store.migrate import head_revision

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "command",
    [[], ["watch"], ["results"], ["db"], ["db", "upgrade"], ["models", "list"], ["completion"]],
    ids=" ".join,
)
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main([*command, "--help"])
    assert caught.value.code == 0
    assert "usage: cctv-gender" in capsys.readouterr().out


def test_python_dash_m_watcher_is_the_same_command_line() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "watcher", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0 and "watch" in completed.stdout and "results" in completed.stdout


def test_the_commands_that_only_read_never_load_torch(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", {})
    script = (
        "import sys\n"
        "from watcher.commands.main import main\n"
        "commands = (['db', 'upgrade'], ['status'], ['results'], ['summary'], ['models', 'list'])\n"
        "for command in commands:\n"
        "    assert main([*command, '--config', sys.argv[1]]) == 0, command\n"
        "    assert 'torch' not in sys.modules, command\n"
        "main(['--version', '-v'])\n"
        "main(['completion', 'bash'])\n"
        "print('heavy:', [name for name in ('torch', 'transformers', 'keras') if name in sys.modules])\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "heavy: []" in completed.stdout, completed.stdout


def test_db_upgrade_creates_the_database(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config()
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    assert (tmp_path / "data" / "results.sqlite3").is_file()
    assert f"database at revision {head_revision()}" in capsys.readouterr().out


@pytest.fixture
def admin_umask() -> Iterator[None]:
    """An admin's shell: umask 022, where the unit runs the daemon with 0027."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("admin_umask")
@pytest.mark.parametrize(
    ("folder_mode", "file_mode"),
    [
        pytest.param(0o2750, 0o640, id="the_units_data_folder"),
        pytest.param(0o700, 0o600, id="a_private_folder"),
        pytest.param(0o755, 0o644, id="an_open_folder"),
    ],
)
def test_db_upgrade_shuts_the_database_to_whom_its_folder_shuts_out(
    make_config: Callable[..., Path], tmp_path: Path, folder_mode: int, file_mode: int
) -> None:
    config = make_config()
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(folder_mode)

    assert main(["db", "upgrade", "--config", str(config)]) == 0

    database = data / "results.sqlite3"
    with sqlite3.connect(database) as connection:  # a writer makes the -wal and -shm (WAL mode)
        connection.execute("CREATE TABLE probe (x)")
        modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in data.glob("results.sqlite3*")}
    connection.close()
    assert modes == dict.fromkeys(
        ["results.sqlite3", "results.sqlite3-wal", "results.sqlite3-shm"], file_mode
    ), {name: oct(mode) for name, mode in modes.items()}


def test_results_asks_for_an_upgrade_on_a_fresh_database(
    make_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config()
    assert main(["results", "--config", str(config)]) == 1
    assert "run `cctv-gender db upgrade`" in capsys.readouterr().err


@pytest.fixture
def processed_config(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Path:
    config = make_config()
    write_bmp(tmp_path / "inbox" / "cam-01" / "a.bmp", seed=1)
    write_bmp(tmp_path / "inbox" / "b.bmp", seed=2)
    (tmp_path / "inbox" / "broken.bmp").write_bytes(b"nope, not an image")
    assert main(["watch", "--once", "--config", str(config)]) == 0
    capsys.readouterr()
    return config


def test_results_table(processed_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["results", "--config", str(processed_config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "id",
        "processed_at",
        "camera",
        "source_path",
        "label",
        "probability",
        "status",
        "model_version",
        "error",
    ]
    assert len(lines) == 2 + 3
    assert any("cam-01/a.bmp" in line and " ok " in line for line in lines)
    assert any(
        "broken.bmp" in line and "failed" in line and "not a recognised image format" in line
        for line in lines
    )


def test_results_csv(processed_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["results", "--format", "csv", "--config", str(processed_config)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert sorted(row["source_path"] for row in rows) == ["b.bmp", "broken.bmp", "cam-01/a.bmp"]
    by_path = {row["source_path"]: row for row in rows}
    assert by_path["cam-01/a.bmp"]["camera"] == "cam-01" and by_path["b.bmp"]["camera"] == ""
    assert by_path["broken.bmp"]["status"] == "failed" and by_path["broken.bmp"]["label"] == ""


def test_results_json_with_limit(processed_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["results", "--format", "json", "--limit", "2", "--config", str(processed_config)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2
    assert rows[0]["id"] > rows[1]["id"]  # newest first
    ok = [row for row in rows if row["status"] == "ok"]
    assert all(row["label"] in ("female", "male") and 0 <= row["probability"] <= 1 for row in ok)
    assert all(row["processed_at"].endswith("+00:00") for row in rows)


def test_results_rejects_a_bad_limit(processed_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["results", "--limit", "0", "--config", str(processed_config)])
    assert caught.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_a_hand_edited_registry_is_one_line_never_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "config.toml", {"display": {"timezone": "UTC"}})
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    registry = tmp_path / "data" / "models"
    usable = {"clip_model": "clip", "feature_size": 8, "preprocessing_version": "p1"}
    for version, changes in (
        ("v1", {}),
        ("v2", {"threshold": None}),  # a field the head needs, of the wrong type: left out
        ("v3", {"feature_size": "8"}),
        ("v4", {"created_at": None, "metrics": {"test": {"accuracy": "high"}}}),  # only shown
    ):
        (registry / version).mkdir(parents=True)
        (registry / version / "head.keras").write_bytes(b"")
        metadata = {**usable, **changes, "version": version}
        (registry / version / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    capsys.readouterr()
    assert main(["models", "list", "--config", str(config)]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    listed = [line.split()[0] for line in captured.out.splitlines()[1:] if not line.startswith("(")]
    assert listed == ["v1", "v4"]
    # A `current` pointer that is not text: the registry is unusable, said in one line.
    (registry / "current").write_bytes(b"\xff\xfe")
    assert main(["models", "list", "--config", str(config)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error and "current" in error, error
    # `status` says it among its problems (unhealthy: a daemon would not start on it).
    assert main(["status", "--config", str(config)]) == 1
    said = capsys.readouterr()
    assert "Traceback" not in said.err and "served head cannot be known" in said.out, said


@pytest.mark.parametrize("broken", ["metadata", "missing"])
def test_a_current_head_that_cannot_be_served_is_said_by_models_list_and_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], broken: str
) -> None:
    # `current` naming a version whose metadata.json was hand-edited into bad JSON, or a version
    # folder removed: the daemon stops at start on it, while `models list` said "no trained heads
    # ...; serving zero-shot CLIP" (or marked nothing and said nothing).
    config = write_config(tmp_path / "config.toml", {"display": {"timezone": "UTC"}})
    registry = tmp_path / "data" / "models"
    usable = {"clip_model": "clip", "feature_size": 8, "preprocessing_version": "p1"}
    for version in ("v1", "v2"):
        (registry / version).mkdir(parents=True)
        (registry / version / "head.keras").write_bytes(b"")
        metadata = json.dumps({**usable, "version": version})
        (registry / version / "metadata.json").write_text(metadata, encoding="utf-8")
    if broken == "metadata":
        (registry / "v2" / "metadata.json").write_text("{", encoding="utf-8")
    else:
        shutil.rmtree(registry / "v2")
    (registry / "current").write_text("v2\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["models", "list", "--config", str(config)]) == 0
    said = capsys.readouterr().out
    assert "serving zero-shot" not in said, said
    assert "current head v2 cannot be served" in said, said
    # `status` is unhealthy for it, as for a pointer it cannot read: no daemon would start.
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["status", "--config", str(config)]) == 1
    said = capsys.readouterr().out
    assert "the served head cannot be known" in said and "v2" in said, said


@pytest.mark.parametrize("command", [["models", "promote", "v2"], ["rescore", "--model", "v2"]])
def test_a_version_whose_metadata_cannot_be_read_is_not_called_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    # The folder and its head file are there: "no head version 'v2' ...; versions: none yet"
    # sent the operator looking for a version that exists, whose metadata.json is bad JSON.
    config = write_config(tmp_path / "config.toml", {"display": {"timezone": "UTC"}})
    (tmp_path / "data" / "models" / "v2").mkdir(parents=True)
    (tmp_path / "data" / "models" / "v2" / "head.keras").write_bytes(b"")
    (tmp_path / "data" / "models" / "v2" / "metadata.json").write_text("{", encoding="utf-8")
    capsys.readouterr()
    assert main([*command, "--config", str(config)]) == 1
    error = capsys.readouterr().err.splitlines()[-1]
    assert "no head version" not in error and "metadata.json: unreadable head metadata" in error, error
