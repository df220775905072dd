"""Everyday use of the command line (issue 19): pipes that close early, one-line errors with the
documented exit codes, --version, shell completion, "N of M shown", plurals, unknown versions."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path

import pytest
from sqlalchemy import insert

from tests.helpers import write_config
from watcher.commands.main import main
from watcher.store.engine import make_engine
from watcher.store.migrate import upgrade_to_head
from watcher.store.schema import Result
from watcher.wording import plural

REPO = Path(__file__).resolve().parent.parent
BASE = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def cli(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "watcher", *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def seed_rows(database: Path, count: int, *, label: str = "female", model: str = "v1") -> None:
    database.parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(f"sqlite:///{database}", busy_timeout_ms=1000)
    upgrade_to_head(engine)
    rows = [
        {
            "frame_key": f"{model}-{label}-{index:06d}",
            "source_path": f"cam-01/{label}-{index}.bmp",
            "stored_path": f"/processed/cam-01/{label}-{index}.bmp",
            "camera": "cam-01",
            "received_at": BASE + timedelta(seconds=index),
            "processed_at": BASE + timedelta(seconds=index),
            "status": "ok",
            "label": label,
            "probability": 0.75,
            "model_version": model,
        }
        for index in range(count)
    ]
    with engine.begin() as connection:
        connection.execute(insert(Result), rows)
    engine.dispose()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A config whose CLIP cannot load: a command that reached the model would fail with exit 1."""
    return write_config(
        tmp_path / "config.toml",
        {
            "paths": {"data": str(tmp_path / "data"), "inbox": str(tmp_path / "inbox")},
            "model": {"clip": str(tmp_path / "no-clip-here")},
        },
    )


@pytest.fixture
def corrupt_site(site: Path, tmp_path: Path) -> Path:
    database = tmp_path / "data" / "results.sqlite3"
    seed_rows(database, 50)
    data = bytearray(database.read_bytes())
    data[100:] = bytes(range(256)) * ((len(data) - 100) // 256) + b"\xff" * ((len(data) - 100) % 256)
    database.write_bytes(bytes(data))
    return site


# --- 1. A reader that goes away ends the command quietly -------------------------------------


@pytest.mark.parametrize("output_format", ["csv", "jsonl", "table"])
def test_a_closed_pipe_ends_the_command_quietly(site: Path, tmp_path: Path, output_format: str) -> None:
    # Far more than a pipe's buffer (64 KiB), so writes go on after the reader has gone.
    seed_rows(tmp_path / "data" / "results.sqlite3", 3000)
    process = subprocess.Popen(
        [sys.executable, "-m", "watcher", "results", "--format", output_format, "--limit", "3000"]
        + ["--config", str(site)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline()  # `| head -1`
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 0
    assert stderr == ""


def test_head_in_a_shell_pipeline_sees_no_traceback(site: Path, tmp_path: Path) -> None:
    seed_rows(tmp_path / "data" / "results.sqlite3", 3000)
    command = f"set -o pipefail; {sys.executable} -m watcher results --format csv --config {site} | head -1"
    completed = subprocess.run(
        ["bash", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("id,processed_at,camera")
    assert completed.stderr == ""


# --- 2. One line on stderr, the documented exit code ----------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["results", "--since", "100000000d"], "out of range", id="since_overflow"),
        pytest.param(["results", "--since", "9999-12-31T23:59:59-05:00"], "out of range", id="iso_overflow"),
        pytest.param(
            ["results", "--since", "1h", "--until", "2h"], "must be before --until", id="since_until"
        ),
        pytest.param(["summary", "--plot", "/nonexistent/x.png"], "no such folder", id="plot_folder"),
        # A file where the plot's folder should be was called "no such folder".
        pytest.param(
            ["summary", "--plot", "/etc/hostname/x.png"], "is a file, not a folder", id="plot_in_a_file"
        ),
        pytest.param(["train", "--data", "/nonexistent"], "no such folder", id="train_data"),
        pytest.param(["evaluate", "--data", "/nonexistent"], "no such folder", id="evaluate_data"),
        pytest.param(
            ["evaluate", "--data", ".", "--model", "v9"], "no head version 'v9'", id="evaluate_model"
        ),
        pytest.param(["rescore", "--model", "v9"], "no head version 'v9'", id="rescore_model"),
        pytest.param(["models", "promote", "v9"], "versions: none yet", id="promote_unknown"),
        pytest.param(["results", "--limit", "0"], "must be at least 1", id="limit"),
        pytest.param(["results", "--limit", "9" * 23], "must be at most", id="limit_overflow"),
        pytest.param(["summary", "--plot", "x.txt"], "a plot is written as .png", id="plot_format"),
        pytest.param(
            ["model", "fetch", "--to", "/etc/hostname"], "is a file, not a folder", id="fetch_into_file"
        ),
        pytest.param(["results", "--bogus"], "unrecognized arguments", id="unknown_option"),
        pytest.param(["watch", "--once", "extra"], "unrecognized arguments", id="extra_argument"),
        pytest.param(["status", "--format", "xml"], "invalid choice", id="bad_choice"),
        pytest.param(["db", "copy"], "--to", id="missing_option"),
        # Each acted as if not given: serve listened on web.listen, selftest checked as the unit's user.
        pytest.param(["serve", "--listen", ""], "argument --listen: must not be empty", id="empty_listen"),
        pytest.param(["selftest", "--as-user", ""], "argument --as-user: must not be empty", id="empty_user"),
        # Was exit 2 with a misleading "web.token: must be set to listen on  127.0.0.1:8600, which
        # is not a loopback address".
        pytest.param(
            ["serve", "--listen", " 127.0.0.1:8600"],
            "--listen  127.0.0.1:8600: must be HOST:PORT with no space in it",
            id="listen_with_a_space",
        ),
        # Was exit 0, the camera column printed twice.
        pytest.param(
            ["summary", "--by", "camera,camera"],
            "name each dimension once: camera repeated",
            id="by_repeated",
        ),
        # Was exit 1, SQLAlchemy's "Could not parse SQLAlchemy URL" (an unset shell variable).
        pytest.param(["db", "copy", "--to", ""], "argument --to: must not be empty", id="empty_to"),
        pytest.param(["models", "promote"], "VERSION", id="missing_version"),
        pytest.param(["launch"], "invalid choice", id="unknown_command"),
        pytest.param([], "name a COMMAND", id="no_command"),
        pytest.param(["completion", "fish"], "invalid choice", id="unknown_shell"),
    ],
)
def test_a_bad_command_line_is_one_line_and_exit_2(
    site: Path, tmp_path: Path, args: list[str], expected: str
) -> None:
    (tmp_path / "data").mkdir(exist_ok=True)
    started = time.monotonic()
    completed = cli(*args, "--config", str(site)) if args else cli(cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert completed.returncode == 2, completed.stderr
    assert len(completed.stderr.splitlines()) == 1, completed.stderr
    assert expected in completed.stderr and "Traceback" not in completed.stderr
    assert elapsed < 30  # no model was loaded (CLIP is not even loadable here)


@pytest.mark.parametrize(
    "command", [["results"], ["summary"], ["status"], ["db", "upgrade"], ["watch", "--once"]]
)
def test_a_corrupt_database_is_one_line_and_exit_1(corrupt_site: Path, command: list[str]) -> None:
    completed = cli(*command, "--config", str(corrupt_site))
    assert completed.returncode == 1, completed.stderr
    lines = completed.stderr.splitlines()
    assert "Traceback" not in completed.stderr
    assert lines[-1].startswith("cctv-gender: error: cannot open the database")
    assert "malformed" in lines[-1] or "not a database" in lines[-1]
    if command != ["watch", "--once"]:  # the daemon logs its start first
        assert len(lines) == 1, completed.stderr


def test_a_plot_that_cannot_be_written_is_one_line(site: Path, tmp_path: Path) -> None:
    seed_rows(tmp_path / "data" / "results.sqlite3", 3)
    folder = tmp_path / "plots"
    folder.mkdir()
    (folder / "x.png").mkdir()  # a folder where the file should go
    completed = cli("summary", "--plot", str(folder / "x.png"), "--config", str(site))
    assert completed.returncode == 2 and "is a folder" in completed.stderr
    assert len(completed.stderr.splitlines()) == 1


@pytest.mark.parametrize("where", ["global", "command", "config"])
def test_debug_shows_the_traceback(corrupt_site: Path, where: str) -> None:
    args = {"global": ["--debug", "results"], "command": ["results", "--debug"], "config": ["results"]}[where]
    if where == "config":
        corrupt_site.write_text(corrupt_site.read_text() + '\n[logging]\nlevel = "debug"\n')
    completed = cli(*args, "--config", str(corrupt_site))
    assert completed.returncode == 1
    assert "Traceback (most recent call last)" in completed.stderr
    assert completed.stderr.splitlines()[-1].startswith("cctv-gender: error: cannot open the database")


# --- 3. --version ------------------------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    completed = cli("--version", cwd=tmp_path)  # no config anywhere: none is needed
    assert completed.returncode == 0 and completed.stdout == f"cctv-gender {version('cctv-gender')}\n"


@pytest.mark.parametrize("args", [["--version", "-v"], ["-v", "--version"], ["--verbose", "--version"]])
def test_verbose_version_names_the_libraries_without_importing_them(args: list[str]) -> None:
    script = (
        "import sys\n"
        "from watcher.commands.main import main\n"
        f"assert main({args!r}) == 0\n"
        "print('heavy:', [name for name in ('torch', 'transformers', 'keras') if name in sys.modules])\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0] == f"cctv-gender {version('cctv-gender')}"
    for library in ("torch", "transformers", "keras"):
        assert f"{library} {version(library)}" in lines
    assert "heavy: []" in lines


# --- 4. Shell completion -----------------------------------------------------------------------


def _bash_completions(script: Path, *words: str) -> list[str]:
    line = " ".join(words)
    program = (
        f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
        'COMP_LINE="' + line + '"; COMP_POINT=${#COMP_LINE}; _shtab_cctv_gender; echo "${COMPREPLY[@]}"'
    )
    completed = subprocess.run(
        ["bash", "-c", program], capture_output=True, text=True, timeout=30, check=True
    )
    return completed.stdout.split()


def test_bash_completion(tmp_path: Path) -> None:
    completed = cli("completion", "bash", cwd=tmp_path)  # needs no config
    assert completed.returncode == 0, completed.stderr
    script = tmp_path / "cctv-gender.bash"
    script.write_text(completed.stdout)
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    assert _bash_completions(script, "cctv-gender", "res") == ["results", "rescore"]
    assert "--format" in _bash_completions(script, "cctv-gender", "results", "--f")
    assert {"list", "promote", "rollback"} <= set(_bash_completions(script, "cctv-gender", "models", '""'))


def test_zsh_completion(tmp_path: Path) -> None:
    completed = cli("completion", "zsh", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("#compdef cctv-gender")
    assert "results" in completed.stdout and "--min-probability" in completed.stdout


# --- 5. "N of M shown", plurals, versions that do not exist --------------------------------------


def test_a_cut_table_says_how_many_rows_it_left_out(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_rows(tmp_path / "data" / "results.sqlite3", 52)
    seed_rows(tmp_path / "data" / "results.sqlite3", 3, label="male", model="v2")
    assert main(["results", "--config", str(site)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("20 of 55 shown")
    assert main(["results", "--label", "male", "--limit", "2", "--config", str(site)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("2 of 3 shown")
    assert main(["results", "--label", "male", "--config", str(site)]) == 0  # not cut: nothing said
    assert "shown" not in capsys.readouterr().out
    assert main(["results", "--format", "json", "--limit", "2", "--config", str(site)]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2  # exports stay exports


def test_a_model_version_never_seen_is_named(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_rows(tmp_path / "data" / "results.sqlite3", 2)
    seed_rows(tmp_path / "data" / "results.sqlite3", 2, model="zero-shot:clip-vit-base-patch32")
    assert main(["results", "--model", "zero-shot", "--config", str(site)]) == 0
    assert (
        "cctv-gender: model version zero-shot has never been seen "
        "(known: v1, zero-shot:clip-vit-base-patch32)" in capsys.readouterr().err
    )
    assert main(["summary", "--model", "v1", "--config", str(site)]) == 0
    assert "never been seen" not in capsys.readouterr().err


def test_promote_names_the_versions_that_exist(site: Path, tmp_path: Path) -> None:
    registry = tmp_path / "data" / "models"
    for name in ("v1", "v2"):
        (registry / name).mkdir(parents=True)
        (registry / name / "head.keras").write_bytes(b"")
        metadata = {"version": name, "clip_model": "clip", "feature_size": 512, "preprocessing_version": "1"}
        (registry / name / "metadata.json").write_text(json.dumps(metadata))
    completed = cli("models", "promote", "v3", "--config", str(site))
    assert completed.returncode == 2
    assert completed.stderr.splitlines() == [
        f"cctv-gender models: error: no head version 'v3' in {registry}; versions: v1, v2 "
        "(see `cctv-gender models --help`)"
    ]


@pytest.mark.parametrize(
    ("count", "noun", "expected"),
    [
        pytest.param(1, "frame", "1 frame", id="one"),
        pytest.param(0, "frame", "0 frames", id="zero"),
        pytest.param(2, "CPU thread", "2 CPU threads", id="two"),
        pytest.param(1, "batch", "1 batch", id="one_batch"),
        pytest.param(3, "batch", "3 batches", id="batches"),
        pytest.param(2, "was", "2 were", id="irregular"),
    ],
)
def test_plurals(count: int, noun: str, expected: str) -> None:
    assert plural(count, noun, "were" if noun == "was" else None) == expected


def test_the_stop_line_of_watch_once_counts_right(make_config: Callable[..., Path]) -> None:
    from model.synthetic import write_bmp

    config = make_config()
    write_bmp(config.parent / "inbox" / "a.bmp", seed=1)
    completed = cli("watch", "--once", "--config", str(config), timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "stopped: 1 frame ok, 0 failed in 1 batch, 0 recovered" in completed.stderr
