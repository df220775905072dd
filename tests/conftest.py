"""Fixtures for the whole suite, and how it is scheduled.

`make test` runs it on every core (pytest-xdist, `-n auto`): each worker process builds its own
tiny CLIP once (session scope), and PostgreSQL tests get a schema of their own, so tests never see
each other's files or rows. The one test that restarts the PostgreSQL server takes a lock that the
other PostgreSQL tests share (`_postgres_lock`), so no worker's connection is cut under it.
Soak tests (`SLOW`) are marked `slow` and scheduled first, so the longest run beside the rest;
`pytest -m "not slow"` is the quick loop, and `make test` (CI) runs everything.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from model.synthetic import build_clip_checkpoint
from tests.helpers import RunningDaemon, write_config


def pytest_configure() -> None:
    """OpenMP threads (torch's, in this process, each xdist worker and every daemon subprocess,
    which inherit the environment) sleep when idle instead of spinning. Without it, two processes
    training on two cores spin against each other: tests/test_training.py took 181 s under `-n 2`
    instead of 28 s. The variable is read when torch loads OpenMP, after this hook."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# Soak tests: many daemon processes started, killed and restarted each (file::function, every
# parametrisation). Each runs for 10 s or more on two cores.
SLOW = frozenset(
    {
        "test_faults.py::test_killed_at_each_step_then_restarted",
        "test_faults.py::test_killed_at_random_moments",
        "test_faults.py::test_three_daemons_share_an_inbox_and_survive_losing_one",
        "test_nothing_halts.py::test_a_frame_that_kills_the_daemon_is_failed_after_3_crashes_and_innocents_are_not",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the soak tests `slow` and move them to the front: with xdist the longest tests start
    first, and the short ones fill in around them (the suite ends when its last worker does)."""
    modules = {item.path.name: item.module for item in items if isinstance(item, pytest.Function)}
    for name in SLOW:  # a renamed test must not drop out of the list unnoticed
        file, function = name.split("::")
        if file in modules and not hasattr(modules[file], function):
            raise pytest.UsageError(f"tests/conftest.py: SLOW names {name}, which does not exist")
    for item in items:
        if f"{item.path.name}::{getattr(item, 'originalname', item.name)}" in SLOW:
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: order kept otherwise


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """The root logger's handlers and level as they were before the test: a command run in-process
    (`main([...])`) installs a handler on the sys.stderr of that moment, which is pytest's capture
    file, closed when the test ends; a later test's log line would then print "Logging error"."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def _switch_interval_restored() -> Iterator[None]:
    """The process's switch interval as it was before the test: building the daemon sets it
    (batch.gil_switch_interval_ms), for the whole process, as `watch` wants."""
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


def _utf8(text: str) -> str:
    """`text` with lone surrogates (undecodable bytes of file names, as os.fsdecode keeps them)
    written as escapes: xdist sends reports between processes as UTF-8, which refuses them."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    """Reports that cross to the xdist controller intact: the suite drops frames with names that are
    not UTF-8, and their paths end up in captured logs and assertion messages."""
    report: pytest.TestReport = yield
    report.sections = [(title, _utf8(content)) for title, content in report.sections]
    if report.failed and report.longrepr is not None:
        text = str(report.longrepr)
        if _utf8(text) != text:
            report.longrepr = _utf8(text)
    return report


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight CLIP saved with save_pretrained: the only fake in the suite (no downloads here)."""
    return build_clip_checkpoint(tmp_path_factory.mktemp("tiny-clip") / "clip")


@pytest.fixture
def make_config(tmp_path: Path, tiny_clip: Path) -> Callable[..., Path]:
    """Write a config.toml in tmp_path that uses the tiny CLIP; sections override the defaults."""

    def make(**sections: dict[str, Any]) -> Path:
        merged: dict[str, dict[str, Any]] = {
            # One torch runtime named: no engine to measure at each start (tests/test_engines.py
            # covers the choice, ONNX Runtime and the fallbacks).
            "model": {"clip": str(tiny_clip), "device": "cpu", "runtime": "torch", "precision": "fp32"},
            # Tests write frames at once; a short settle keeps them quick but still exercised.
            "inbox": {"settle_ms": 0, "poll_interval_ms": 20},
            "batch": {"size": 8, "max_wait_ms": 50},
            # Hours and days bucket in the site's zone: UTC here, whatever the host says.
            "display": {"timezone": "UTC"},
        }
        for name, values in sections.items():
            merged.setdefault(name, {}).update(values)
        return write_config(tmp_path / "config.toml", merged)

    return make


@pytest.fixture
def start_daemon(make_config: Callable[..., Path]) -> Iterator[Callable[..., RunningDaemon]]:
    """The real daemon loop in a thread, on a config from `make_config`; stopped at teardown."""
    from watcher.config import load_config
    from watcher.pipeline.assembly import build_daemon

    started: list[RunningDaemon] = []

    def start(**sections: dict[str, Any]) -> RunningDaemon:
        stop = threading.Event()
        daemon = build_daemon(load_config(make_config(**sections)), stop=stop)
        thread = threading.Thread(target=daemon.run, name="daemon", daemon=True)
        thread.start()
        started.append(RunningDaemon(daemon, stop, thread))
        return started[-1]

    yield start
    for running in started:
        running.stop.set()
        running.daemon.wake()
        running.thread.join(timeout=30)
        assert not running.thread.is_alive(), "the daemon did not stop"


# The machine's PostgreSQL (`make test` starts it when it is down); override with this variable.
POSTGRES_SERVER = os.environ.get(
    "CCTV_GENDER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


# The fixture by which a test stops and starts the PostgreSQL server (tests/test_databases.py).
RESTARTS_POSTGRES = "postgres_control"


@pytest.fixture
def _postgres_lock(request: pytest.FixtureRequest) -> Iterator[None]:
    """Shared by every test on the PostgreSQL server, exclusive for a test that restarts it: the
    restart waits until no other test (in any xdist worker, or another run on this machine) is
    connected, and holds the others off until the server is back. A lock file, not a wait."""
    exclusive = RESTARTS_POSTGRES in request.fixturenames
    path = Path(tempfile.gettempdir()) / "cctv-gender-tests-postgres.lock"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture
def postgres_url(_postgres_lock: None) -> Iterator[str]:
    """A database URL on the real PostgreSQL whose tables live in a schema of this test's own,
    dropped afterwards: tests (and CI runs) never see each other's rows."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    schema = f"t_{uuid.uuid4().hex[:12]}"
    # pre_ping: a test may restart the server under this engine's pooled connection.
    admin = create_engine(POSTGRES_SERVER, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except OperationalError as error:
        pytest.fail(f"PostgreSQL at {POSTGRES_SERVER} is not reachable (`make test` starts it): {error.orig}")
    separator = "&" if "?" in POSTGRES_SERVER else "?"
    yield f"{POSTGRES_SERVER}{separator}options=-csearch_path%3D{schema}"
    with admin.connect() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each engine in turn: a SQLite file in tmp_path, then a PostgreSQL schema of the test's own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'results.sqlite3'}"
    return request.getfixturevalue("postgres_url")
