from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RunningDaemon, write_config
from tests.tiny_clip import build_clip_checkpoint


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight CLIP saved with save_pretrained: the only fake in the suite (no downloads here)."""
    return build_clip_checkpoint(tmp_path_factory.mktemp("tiny-clip") / "clip")


@pytest.fixture
def make_config(tmp_path: Path, tiny_clip: Path) -> Callable[..., Path]:
    """Write a config.toml in tmp_path that uses the tiny CLIP; sections override the defaults."""

    def make(**sections: dict[str, Any]) -> Path:
        merged: dict[str, dict[str, Any]] = {
            "model": {"clip": str(tiny_clip), "device": "cpu"},
            # Tests write frames at once; a short settle keeps them quick but still exercised.
            "inbox": {"settle_ms": 0, "poll_interval_ms": 20},
            "batch": {"size": 8, "max_wait_ms": 50},
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


@pytest.fixture
def postgres_url() -> Iterator[str]:
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
