"""`cctv-gender status` tells the truth: frames nobody holds, a frozen daemon, a crash, a death.

Each situation is built for real: frames in in-progress areas on disk, instance locks flock'd by
this process (as a running daemon holds its own), heartbeat rows in a migrated SQLite database.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tests.helpers import write_config
from watcher.commands.main import main
from watcher.config import Config, load_config
from watcher.service.heartbeat import Heartbeat, Progress
from watcher.service.status import collect_status, render_status
from watcher.store.engine import make_engine
from watcher.store.migrate import upgrade_to_head
from watcher.store.schema import Instance


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Path, Config, Engine]]:
    """A config, its inbox's in-progress folder and a migrated database, with nothing running."""
    path = write_config(tmp_path / "config.toml", {})
    config = load_config(path)
    config.in_progress.mkdir(parents=True)
    config.paths.data.mkdir()
    engine = make_engine(config.database_url, busy_timeout_ms=1000)
    upgrade_to_head(engine)
    yield path, config, engine
    engine.dispose()


@pytest.fixture
def hold_lock(site: tuple[Path, Config, Engine]) -> Iterator[Callable[[str], None]]:
    """Hold an instance's lock as its running daemon would (flock on its own open file)."""
    in_progress = site[1].in_progress
    descriptors: list[int] = []

    def hold(name: str) -> None:
        descriptor = os.open(in_progress / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        descriptors.append(descriptor)

    yield hold
    for descriptor in descriptors:
        os.close(descriptor)


def _free_lock(config: Config, name: str) -> None:
    """A lock file nobody holds: what a daemon that has gone leaves behind."""
    (config.in_progress / f"{name}.lock").touch()


def _claimed_frames(config: Config, name: str, count: int) -> None:
    """`count` frames in the instance's area, a key folder each, with the bookkeeping beside them
    that must never be counted as frames."""
    area = config.in_progress / name
    area.mkdir(exist_ok=True)
    (area / ".clean-stop").touch()
    for index in range(count):
        key_dir = area / f"{index:032x}"
        (key_dir / "cam-01").mkdir(parents=True)
        (key_dir / "cam-01" / f"{index}.bmp").write_bytes(b"BM")
        (key_dir / ".attempts").write_text("1")
        (key_dir / ".source").write_bytes(b"cam-01/x.bmp")


def _heartbeat_row(
    engine: Engine,
    name: str,
    *,
    state: str = "running",
    seen_ago_s: float = 1.0,
    claimed: int = 0,
    crashes: int = 0,
    crashed_ago_s: float | None = None,
) -> None:
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        session.add(
            Instance(
                name=name,
                host="node",
                pid=4242,
                state=state,
                started_at=now - timedelta(hours=1),
                last_seen_at=now - timedelta(seconds=seen_ago_s),
                claimed=claimed,
                frames_ok=10,
                frames_failed=0,
                frames_per_s=1.0,
                model_version="zero-shot:test",
                crashes=crashes,
                last_crash_at=None if crashed_ago_s is None else now - timedelta(seconds=crashed_ago_s),
            )
        )


def _unhealthy_because(config_path: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Run `cctv-gender status` as monitoring does: exit 1, and the problems in the JSON."""
    assert main(["status", "--format", "json", "--config", str(config_path)]) == 1
    status = json.loads(capsys.readouterr().out)
    assert not status["healthy"]
    return status["problems"]


def test_a_running_instance_with_fresh_heartbeats_is_healthy(
    site: tuple[Path, Config, Engine], hold_lock: Callable[[str], None]
) -> None:
    _, config, engine = site
    hold_lock("node-0")
    _claimed_frames(config, "node-0", 3)
    _heartbeat_row(engine, "node-0", claimed=3)

    status = collect_status(config)

    assert status.healthy, status.problems
    # Frames are key folders; `.clean-stop`, `.attempts` and `.source` are bookkeeping.
    assert status.in_progress == 3
    [item] = status.instances_seen
    assert item.claimed == 3 and item.running and item.crashes == 0


def test_frames_in_progress_that_no_live_instance_holds(
    site: tuple[Path, Config, Engine],
    hold_lock: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    config_path, config, engine = site
    hold_lock("node-0")
    _heartbeat_row(engine, "node-0")
    # node-1 stopped (it said so) but left frames claimed: nobody will finish them until it returns.
    _free_lock(config, "node-1")
    _claimed_frames(config, "node-1", 2)
    _heartbeat_row(engine, "node-1", state="stopped", seen_ago_s=30)

    problems = _unhealthy_because(config_path, capsys)

    assert problems == [
        "2 frames in progress in the area of instance node-1, which no live instance holds (its lock is free)"
    ]


@pytest.mark.parametrize(
    ("claimed_in_row", "frames_in_area"),
    [
        pytest.param(4, 0, id="claimed_at_its_last_beat"),
        pytest.param(0, 4, id="frames_in_its_area"),
    ],
)
def test_a_frozen_daemon_holding_frames(
    site: tuple[Path, Config, Engine],
    hold_lock: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
    claimed_in_row: int,
    frames_in_area: int,
) -> None:
    config_path, config, engine = site
    hold_lock("node-0")  # its process is alive (the lock is held) but its loop no longer turns
    _claimed_frames(config, "node-0", frames_in_area)
    _heartbeat_row(engine, "node-0", seen_ago_s=60, claimed=claimed_in_row)

    [problem] = _unhealthy_because(config_path, capsys)

    # Seconds are read off a clock that moves on: the pattern allows for a slow machine.
    frozen = r"instance node-0 holds 4 frames but its last heartbeat was 6\d s ago .*: frozen"
    assert re.fullmatch(frozen, problem), problem


def test_a_quiet_heartbeat_with_nothing_claimed_is_not_frozen(
    site: tuple[Path, Config, Engine], hold_lock: Callable[[str], None]
) -> None:
    _, config, engine = site
    hold_lock("node-0")
    _heartbeat_row(engine, "node-0", seen_ago_s=60, claimed=0)

    assert collect_status(config).healthy


def test_an_instance_that_died_without_stopping(
    site: tuple[Path, Config, Engine], capsys: pytest.CaptureFixture[str]
) -> None:
    config_path, config, engine = site
    _free_lock(config, "node-2")
    _heartbeat_row(engine, "node-2", state="running", seen_ago_s=120)

    [problem] = _unhealthy_because(config_path, capsys)

    assert re.fullmatch(r"instance node-2 died without stopping \(last seen 12\d s ago\)", problem)


def test_a_restart_after_a_crash_is_counted_and_reported(
    site: tuple[Path, Config, Engine],
    hold_lock: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    config_path, config, engine = site
    _heartbeat_row(engine, "node-0", state="running", seen_ago_s=90)  # killed 90 s ago
    # It starts again: takes its lock, records its start, beats.
    hold_lock("node-0")
    heartbeat = Heartbeat(engine, instance="node-0")
    assert heartbeat.record_start()
    heartbeat.beat(Progress(claimed=0, frames_ok=0, frames_failed=0, frames_per_s=0.0, model_version="v"))

    [problem] = _unhealthy_because(config_path, capsys)

    assert re.fullmatch(r"instance node-0 crashed 9\d s ago \(1 crash so far\)", problem)
    [item] = collect_status(config).instances_seen
    assert item.crashes == 1 and item.running and item.state == "running"
    assert re.search(r"\b1 \(last 9\d s ago\)", render_status(collect_status(config), output_format="text"))


def test_a_crash_longer_ago_than_15_minutes_is_history(
    site: tuple[Path, Config, Engine], hold_lock: Callable[[str], None]
) -> None:
    _, config, engine = site
    hold_lock("node-0")
    _heartbeat_row(engine, "node-0", crashes=3, crashed_ago_s=20 * 60)

    status = collect_status(config)

    assert status.healthy, status.problems
    assert status.instances_seen[0].crashes == 3
    table = render_status(status, output_format="text")
    assert "crashes" in table and re.search(r"\b3 \(last 12\d\d s ago\)", table)


def test_record_start_counts_a_run_that_never_said_it_stopped(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    engine = make_engine(database_url, busy_timeout_ms=1000)
    upgrade_to_head(engine)
    progress = Progress(claimed=1, frames_ok=5, frames_failed=0, frames_per_s=2.0, model_version="v")

    first = Heartbeat(engine, instance="node-0")
    assert not first.record_start()  # no row yet: a first start
    first.beat(progress, force=True)
    first.beat(progress, state="stopped", force=True)
    assert not Heartbeat(engine, instance="node-0").record_start()  # it said it stopped

    Heartbeat(engine, instance="node-0").beat(progress, force=True)  # then it is killed mid-run
    with Session(engine) as session:
        last_seen = session.scalars(select(Instance.last_seen_at)).one()
    restarted = Heartbeat(engine, instance="node-0")
    assert restarted.record_start()
    restarted.beat(progress, force=True)  # its beats keep the count
    with Session(engine) as session:
        row = session.scalars(select(Instance)).one()
        assert (row.state, row.crashes, row.last_crash_at) == ("running", 1, last_seen)
    engine.dispose()


def test_record_start_does_not_fail_the_daemon_when_the_database_is_away(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'r.sqlite3'}", busy_timeout_ms=100)
    with caplog.at_level(logging.WARNING, logger="watcher.service.heartbeat"):
        assert not Heartbeat(engine, instance="node-0").record_start()
    assert "cannot check how node-0 stopped last time" in caplog.text


@pytest.mark.parametrize("inbox", ["missing", "a file"])
def test_an_inbox_that_is_not_there_is_a_problem(
    site: tuple[Path, Config, Engine], capsys: pytest.CaptureFixture[str], inbox: str
) -> None:
    # An unmounted share, once `watch` has made the folders: no frame can arrive and a daemon
    # does not start on it, while status said "health: ok, waiting in inbox: 0" to the
    # monitoring that should have noticed. (Before that first start, one is just not made yet.)
    path, config, _ = site
    for folder in ("processed", "failed"):
        (config.paths.data.parent / folder).mkdir()
    config.in_progress.rmdir()
    config.paths.inbox.rmdir()
    assert main(["status", "--config", str(path)]) == 0
    capsys.readouterr()
    (config.paths.data / ".folders-made").touch()
    if inbox == "a file":
        config.paths.inbox.write_text("")
    [problem] = _unhealthy_because(path, capsys)
    assert problem.startswith(f"paths.inbox {config.paths.inbox}: is ")


def test_folders_its_user_may_not_enter_are_no_problem_for_status(tmp_path: Path) -> None:
    # processed/ and failed/ under a folder of the service user's (0700), status run by another
    # user (monitoring): status stopped with "error: .../processed: Permission denied" (exit 1)
    # and said nothing else, where it said "health: ok" before it looked at those folders.
    if os.geteuid() != 0:
        pytest.skip("needs root: chown, and setpriv to drop root's overrides")
    paths = {"processed": "service/processed", "failed": "service/failed"}
    path = write_config(tmp_path / "config.toml", {"paths": paths})
    config = load_config(path)
    for folder in (config.in_progress, config.paths.data, config.paths.processed, config.paths.failed):
        folder.mkdir(parents=True)
    (config.paths.data / ".folders-made").touch()
    engine = make_engine(config.database_url, busy_timeout_ms=1000)
    upgrade_to_head(engine)
    engine.dispose()
    os.chown(tmp_path / "service", 12345, 12345)
    (tmp_path / "service").chmod(0o700)
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]
    status = subprocess.run(
        [*prefix, sys.executable, "-m", "watcher", "status", "--format", "json", "--config", str(path)],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["problems"] == []
