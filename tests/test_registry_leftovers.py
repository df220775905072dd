"""What a registration killed half-way leaves in the registry (its staging folder), and who may
remove it: the next registration, which holds the registry's lock as every registration does."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from model.registry import HEAD_FILE, register_version

REPO = Path(__file__).resolve().parent.parent

# A registration SIGKILLed while it writes its version, as a training run killed there is.
_KILLED_MID_WRITE = """
import os, signal, sys
from pathlib import Path
from model.registry import register_version

def write(folder: Path) -> None:
    (folder / "head.keras").write_bytes(b"half a head")
    os.kill(os.getpid(), signal.SIGKILL)

register_version(Path(sys.argv[1]), "20260101-000000", write)
"""


def _write_head(folder: Path) -> None:
    (folder / HEAD_FILE).write_bytes(b"a head")


def test_the_staging_folder_of_a_killed_registration_is_removed_by_the_next(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = tmp_path / "models"
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_MID_WRITE, str(registry)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL
    (dead,) = registry.glob(".20260101-000000.*")
    assert (dead / "head.keras").is_file()
    # Not a staging folder of ours, whatever it looks like: left alone.
    others = [registry / ".git", registry / ".notes.abcdefgh", registry / ".link.abcdefgh"]
    others[0].mkdir()
    others[1].write_text("a file, not a folder")
    outside = tmp_path / "outside"
    outside.mkdir()
    others[2].symlink_to(outside, target_is_directory=True)
    caplog.set_level(logging.INFO, logger="model.registry")

    register_version(registry, "20260101-000001", _write_head)

    assert not dead.exists()
    assert f"removed {dead}, left by a registration that died" in caplog.text
    assert (registry / "20260101-000001" / HEAD_FILE).read_bytes() == b"a head"
    assert all(os.path.lexists(path) for path in others) and outside.is_dir()


def test_a_registration_writes_its_staging_folder_with_the_registry_locked(tmp_path: Path) -> None:
    """What makes the removal above safe: a staging folder found by a registration, which holds
    the lock, is never another registration's at work (register_head's callers hold no lock)."""
    registry = tmp_path / "models"
    registry.mkdir()
    held: list[bool] = []

    def write(folder: Path) -> None:
        descriptor = os.open(registry, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held.append(True)
        else:
            held.append(False)
        finally:
            os.close(descriptor)
        _write_head(folder)

    register_version(registry, "v1", write)

    assert held == [True]
