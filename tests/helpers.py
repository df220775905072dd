"""Shared test helpers: config files, reading results, daemons as processes, and waiting without
sleeping blindly. Generated inputs (the tiny CLIP, BMP frames) are `model.synthetic`'s."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model.synthetic import bmp_bytes

if TYPE_CHECKING:
    import pytest

    from watcher.pipeline.daemon import Daemon

REPO = Path(__file__).resolve().parents[1]

# A BMP header declaring 100000×100000 pixels: a decompression bomb, refused before decoding.
BOMB_BMP = (
    b"BM" + (58).to_bytes(4, "little") + b"\0\0\0\0" + (54).to_bytes(4, "little") + (40).to_bytes(4, "little")
    + (100_000).to_bytes(4, "little") + (100_000).to_bytes(4, "little") + (1).to_bytes(2, "little")
    + (24).to_bytes(2, "little") + b"\0" * 28
)  # fmt: skip


@dataclass
class RunningDaemon:
    daemon: Daemon
    stop: threading.Event
    thread: threading.Thread

    def turns_from_now(self, count: int) -> None:
        """Wait until the loop has gone round `count` more times (it looked at the inbox again)."""
        start = self.daemon.turns
        wait_for(lambda: self.daemon.turns >= start + count, what=f"{count} more turns of the loop")

    def take_away(self, folder: Path, log: pytest.LogCaptureFixture) -> Path:
        """`folder` renamed away once the loop runs (an unmounted share), and the daemon's notice
        of it in `log` waited for; returns where it went (rename it back to return it)."""
        wait_for(lambda: self.daemon.turns > 0, what="the loop to start")
        away = folder.with_name("unmounted")
        folder.rename(away)
        self.daemon.wake()
        wait_for(lambda: "missing (unmounted?): waiting" in log.text, what="the daemon to notice")
        return away


def feature_cosines(clip: Path, *, reference: tuple[str, str], candidate: tuple[str, str]) -> np.ndarray:
    """Cosine similarity, frame by frame, of CLIP features at two (device, precision) settings."""
    from model.clip_features import ClipFeatureExtractor
    from model.images import decode_rgb
    from model.runtime import resolve_runtime

    images = [decode_rgb(bmp_bytes(width=640, height=480, seed=seed), max_pixels=10**8) for seed in range(8)]
    features = [
        ClipFeatureExtractor(
            str(clip), runtime=resolve_runtime(device=device, precision=precision)
        ).image_features(images)
        for device, precision in (reference, candidate)
    ]
    # Features are L2-normalised, so the dot product is the cosine similarity.
    return np.sum(features[0] * features[1], axis=1)


def write_unknown_layer_head(path: Path) -> None:
    """A well-formed .keras file naming a layer class Keras does not know (it raises TypeError)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", '{"class_name": "NoSuchLayer", "config": {}}')
        archive.writestr("metadata.json", "{}")


def start_watch_process(
    config: Path, log: Path, *, prefix: list[str] | None = None, new_session: bool = False
) -> subprocess.Popen[bytes]:
    """`cctv-gender watch` as a process of its own (real signals), its log (stderr) in `log`;
    `prefix` runs it through another command (setpriv); `new_session` makes it the leader of a
    process group of its own (for signals to the whole group, as systemd sends them)."""
    env = {key: value for key, value in os.environ.items() if key != "JOURNAL_STREAM"}
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "watcher", "watch", "--config", str(config)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            start_new_session=new_session,
        )


def run_watch_once(
    config: Path, *, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`cctv-gender watch --once` as a process of its own, run to its end; its stderr in the result."""
    return subprocess.run(
        [sys.executable, "-m", "watcher", "watch", "--once", "--config", str(config)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return repr(value)


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def wait_for(
    predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.02, what: str = "condition"
) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def query(database: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Read the results database with plain sqlite3, as an operator's SQL client would."""
    connection = sqlite3.connect(database)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def query_url(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Read any results database (SQLite or PostgreSQL) by URL, on a connection of its own."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql), params)]
    finally:
        engine.dispose()


def files_under(folder: Path) -> list[str]:
    """Files below `folder`, relative, sorted; instance lock files (`.in-progress/*.lock`) and
    clean-stop marks (`.in-progress/<instance>/.clean-stop`) left out."""
    # os.walk, not rglob: running daemons remove folders while we look, and walk skips those.
    found = []
    for directory, _, names in os.walk(folder):
        parent = Path(directory)
        for name in names:
            # Bookkeeping, not frames: instance locks, and an instance's clean-stop mark.
            if not (name.endswith(".lock") and parent.name == ".in-progress") and name != ".clean-stop":
                found.append((parent / name).relative_to(folder).as_posix())
    return sorted(found)


def mount_tmpfs(folder: Path, *, size: str) -> None:
    """A real tmpfs of `size` at `folder` (made if missing): another filesystem, small enough to
    fill. Skips the test where mounting is not allowed; the caller unmounts (`umount -l`)."""
    import pytest

    folder.mkdir(parents=True, exist_ok=True)
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
            check=False,
        ).returncode
    ):
        pytest.skip("needs root to mount a small tmpfs")


def seed_results(url: str, rows: list[dict[str, Any]]) -> None:
    """Result rows as the daemon writes them, on a database migrated to head: each dict gives `at`
    (processed), and optionally `status`, `model`, `stored_path` and any other column."""
    from sqlalchemy.orm import Session

    from watcher.store.engine import make_engine
    from watcher.store.migrate import upgrade_to_head
    from watcher.store.schema import Result

    engine = make_engine(url, busy_timeout_ms=1000)
    upgrade_to_head(engine)
    with Session(engine) as session, session.begin():
        for index, values in enumerate(rows):
            processed = values.pop("at")
            status = values.pop("status", "ok")
            session.add(
                Result(
                    frame_key=f"k{index:06d}",
                    source_path=f"{values.get('camera') or '.'}/{index}.bmp",
                    stored_path=values.pop("stored_path", f"/processed/{index}.bmp"),
                    received_at=processed,
                    processed_at=processed,
                    status=status,
                    model_version=values.pop("model", "v1"),
                    error=None if status == "ok" else "not a recognised image format",
                    **values,
                )
            )
    engine.dispose()
