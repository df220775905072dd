"""bench/gpu.sh's hold on each step: a step past its limit is ended with everything it started and
recorded as timed out, and the run goes on to the next; the whole folder can come back as one
archive. The steps here are stand-ins (bench/gpu.sh's `--python` is a script that runs them as
told, and hands the rest, the preflight and the verdict, to this Python): what is tested is the
script's own handling, in seconds; tests/test_bench_gpu_script.py runs the real steps."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.helpers import wait_for

REPO = Path(__file__).resolve().parent.parent


def stand_in_python(folder: Path, *, hangs: str) -> Path:
    """A `--python` whose step `hangs` (a bench/ script's name) never ends, with a child that
    ignores SIGTERM (as a daemon busy stopping might) and writes its pid to hung.pid; the other
    steps end at once, and everything else runs on this Python."""
    script = folder / "python"
    script.write_text(
        "#!/usr/bin/env bash\n"
        'case " $* " in\n'
        f'    *" bench/{hangs} "*) (trap "" TERM; exec sleep 300) & echo "$!" > {folder}/hung.pid; wait ;;\n'
        '    *" bench/gpu_"*) ;;\n'  # the preflight and the verdict: this Python
        '    *" bench/"*|*" -m pytest "*) echo "stand-in for $*"; exit 0 ;;\n'
        "esac\n"
        f'exec {sys.executable} "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(") ")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_step_past_its_limit_is_ended_with_its_children_and_the_next_step_runs(tmp_path: Path) -> None:
    """A `watch --once` that never ends held the whole run: no step after it ran, and a GPU loan
    ran out with one figure. Now it is ended at its limit, its whole process group with it."""
    out, archive = tmp_path / "figures", tmp_path / "gpu.tar.gz"
    python = stand_in_python(tmp_path, hangs="watch_once.py")
    command = ["bash", "bench/gpu.sh", str(out), "--device", "cpu", "--model", "tiny"]
    command += ["--python", str(python), "--limit", "watch-once=2", "--limit", "latency=30"]
    command += ["--tar", str(archive)]
    # Another process on the GPU, as nvidia-smi (which cannot run here) would list it.
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\necho '4242, /usr/bin/python3, 30720 MiB'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": os.pathsep.join([str(smi.parent), os.environ["PATH"]])}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr
    assert "bench/gpu.sh: watch-once timed out after 2 s; on to the next step" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    hung, *others = summary["steps"]
    assert hung["step"] == "watch-once" and hung["timed_out"] is True and hung["exit_code"] == 124
    assert hung["limit_seconds"] == 2 and hung["seconds"] >= 2 and hung["left_running"] is True
    # The child that ignored SIGTERM is gone too: it would have held the GPU through the next steps.
    hung_child = int((tmp_path / "hung.pid").read_text())
    wait_for(lambda: not running(hung_child), timeout=10, what="the hung step's child to end")
    assert [(step["step"], step["exit_code"], step["timed_out"]) for step in others] == [
        ("live-mass-drop", 0, False),
        ("gpu-tests", 0, False),
        ("latency", 0, False),
    ]
    assert others[-1]["limit_seconds"] == 30 and summary["finished"] is True
    assert "stand-in for" in (out / "latency.log").read_text()
    assert "step watch-once: timed out after 2 s" in result.stdout  # the verdict's table says why
    # The run went ahead beside the other process, and says so.
    assert summary["gpu_processes_at_start"] == [
        {"pid": 4242, "process_name": "/usr/bin/python3", "used_memory": "30720 MiB"}
    ]
    assert "warning: already on the GPU at start" in result.stderr
    # The whole folder in one file, for a machine whose tool returns a few.
    assert f"and all of them in {archive}" in result.stdout
    with tarfile.open(archive) as written:
        names = set(written.getnames())
        kept = written.extractfile("figures/summary.json")
        assert kept is not None and json.loads(kept.read()) == summary
    assert {"figures/targets.txt", "figures/watch-once.log", "figures/latency.log"} <= names


@pytest.mark.parametrize(
    ("options", "said"),
    [
        pytest.param(["--limit", "watch-twice=60"], "--limit wants STEP=SECONDS", id="unknown_step"),
        pytest.param(["--limit", "latency=1.5"], "--limit wants STEP=SECONDS", id="seconds_not_whole"),
        pytest.param(["--limit", "latency"], "--limit wants STEP=SECONDS", id="no_seconds"),
        pytest.param(["--tar", "{out}/gpu.tar.gz"], "is inside", id="archive_inside_the_folder"),
        pytest.param(["--tar", "{tmp}/nowhere/gpu.tar.gz"], "no folder", id="archive_folder_missing"),
        pytest.param(["--python", "{tmp}/no-python"], "no Python at", id="no_python"),
    ],
)
def test_a_mistaken_option_is_refused_before_any_step(tmp_path: Path, options: list[str], said: str) -> None:
    out = tmp_path / "figures"
    shown = [option.format(out=out, tmp=tmp_path) for option in options]
    command = ["bash", "bench/gpu.sh", str(out), "--device", "cpu", "--model", "tiny", *shown]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and said in result.stderr and len(result.stderr.splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())  # no step ran, no summary written


def test_a_package_the_steps_need_stops_the_run_before_its_first_step(tmp_path: Path) -> None:
    """A lent machine whose wheels did not all install: one line naming the package, not every
    step failing at its first import in turn."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "prometheus_client.py").write_text("raise ImportError('not installed here')\n")
    out = tmp_path / "figures"
    command = [
        "bash",
        "bench/gpu.sh",
        str(out),
        "--device",
        "cpu",
        "--model",
        "tiny",
        "--python",
        sys.executable,
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow), str(REPO)])}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2, result.stderr
    assert "cannot import prometheus_client (the daemon's start" in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "==" not in result.stdout
    assert not (out / "summary.json").exists()
