"""`cctv-gender backfill --ray`: the same promises as in-process (tests/test_backfill.py) on a real
Ray cluster of several nodes on this machine (`ray.cluster_utils.Cluster`, 1 CPU each): one row
per file, a broken file a failed row, the archive untouched; a node lost mid-run and a rerun
still give one row per file; rows through PostgreSQL (a cluster's database) and, for a local Ray,
SQLite."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ray.cluster_utils import Cluster
from sqlalchemy.exc import ProgrammingError

from tests.helpers import query_url, wait_for
from tests.test_backfill import make_archive, rows, snapshot
from watcher.commands.main import main

OBJECT_STORE_BYTES = 150 * 1024 * 1024


@pytest.fixture
def cluster() -> Iterator[tuple[Cluster, list[object]]]:
    """A head that runs no work (0 CPUs) and two worker nodes of 1 CPU each."""
    made = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": OBJECT_STORE_BYTES}
    )
    nodes = [made.add_node(num_cpus=1, object_store_memory=OBJECT_STORE_BYTES) for _ in range(2)]
    made.wait_for_nodes()
    yield made, nodes
    made.shutdown()


def test_a_cluster_backfills_each_file_once_into_postgresql(
    cluster: tuple[Cluster, list[object]],
    make_config: Callable[..., Path],
    tmp_path: Path,
    postgres_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    archive = make_archive(tmp_path / "archive")
    before = snapshot(archive)
    config = make_config(database={"url": postgres_url})
    command = ["backfill", str(archive), "--ray", cluster[0].address, "--config", str(config)]
    assert main(command) == 0
    assert "25 files, 24 ok, 1 failed, 0 skipped" in capsys.readouterr().out
    stored = rows(postgres_url)
    assert len(stored) == 25 and len({path for path, _, _ in stored}) == 25
    assert [path for path, status, _ in stored if status == "failed"] == ["cam-0/broken.bmp"]
    assert snapshot(archive) == before
    models = query_url(
        postgres_url, "SELECT DISTINCT model_version, embedding_model FROM results WHERE status = 'ok'"
    )
    assert len(models) == 1 and models[0][0].startswith("zero-shot:") and models[0][1]

    assert main(command) == 0
    assert "0 ok, 0 failed, 25 skipped" in capsys.readouterr().out
    assert rows(postgres_url) == stored


def test_a_node_lost_mid_run_then_a_rerun_leaves_one_row_per_file(
    cluster: tuple[Cluster, list[object]], make_config: Callable[..., Path], tmp_path: Path, postgres_url: str
) -> None:
    archive = make_archive(tmp_path / "archive", frames=60)
    config = make_config(database={"url": postgres_url}, batch={"size": 4})
    command = [sys.executable, "-m", "watcher", "backfill", str(archive), "--ray", cluster[0].address,
               "--config", str(config)]  # fmt: skip
    log = (tmp_path / "first.log").open("wb")
    first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _stored(postgres_url) >= 4 or first.poll() is not None, timeout=120)
        at_loss = _stored(postgres_url)
        cluster[0].remove_node(cluster[1][0], allow_graceful=False)  # a worker node dies
        first.wait(timeout=240)  # Ray may finish on the other node, or give up: either way
        assert at_loss < 61, "the run was over before the node was lost"
    finally:
        if first.poll() is None:
            first.kill()
        log.close()
    second = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    stored = rows(postgres_url)
    assert len(stored) == 61 and len({path for path, _, _ in stored}) == 61


def _stored(url: str) -> int:
    try:
        return len(rows(url))
    except ProgrammingError:  # the backfill has not made the schema yet
        return 0


def test_a_local_ray_on_sqlite_and_a_cluster_refused_on_sqlite(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = make_archive(tmp_path / "archive", frames=6)
    config = make_config()
    with pytest.raises(SystemExit) as stopped:
        main(["backfill", str(archive), "--ray", "auto", "--config", str(config)])
    assert stopped.value.code == 2 and "PostgreSQL" in capsys.readouterr().err
    assert main(["backfill", str(archive), "--ray", "local", "--config", str(config)]) == 0
    assert "7 files, 6 ok, 1 failed" in capsys.readouterr().out
    assert len(rows(f"sqlite:///{tmp_path / 'data' / 'results.sqlite3'}")) == 7
