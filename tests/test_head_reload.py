"""A running daemon switches heads between batches on promotion (and SIGHUP), never inside one."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from model.clip_features import PREPROCESSING_VERSION
from model.keras_head import build_head_model
from model.registry import HEAD_FILE, HeadMetadata, promote, register_head
from model.synthetic import write_bmp
from tests.helpers import (
    RunningDaemon,
    files_under,
    query,
    start_watch_process,
    wait_for,
    write_unknown_layer_head,
)


def _register(registry: Path, clip: Path, version: str) -> None:
    model = build_head_model(16)
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(8, 16)).astype("float32"), np.array([0, 1] * 4), epochs=1, verbose=0)
    metadata = HeadMetadata(
        version=version, clip_model=str(clip), feature_size=16, preprocessing_version=PREPROCESSING_VERSION
    )
    register_head(registry, model, metadata)


def _versions(database: Path) -> list[str]:
    return [version for (version,) in query(database, "SELECT model_version FROM results ORDER BY id")]


def test_a_promotion_is_served_from_the_next_batch(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path, tiny_clip: Path
) -> None:
    start_daemon()
    database = tmp_path / "data" / "results.sqlite3"
    write_bmp(tmp_path / "inbox" / "before.bmp", seed=1)
    wait_for(lambda: len(_versions(database)) == 1, what="the first row")

    registry = tmp_path / "data" / "models"
    _register(registry, tiny_clip, "v-new")
    promote(registry, "v-new")
    write_bmp(tmp_path / "inbox" / "after.bmp", seed=2)
    wait_for(lambda: len(_versions(database)) == 2, what="the second row")

    assert _versions(database)[0].startswith("zero-shot:")
    assert _versions(database)[1] == "v-new"


def _broken_head(write: Callable[[Path], object]) -> Callable[[Path, Path], None]:
    """A registry change that promotes a version whose head file `write` spoils."""

    def promote_it(registry: Path, clip: Path) -> None:
        _register(registry, clip, "v-broken")
        write(registry / "v-broken" / HEAD_FILE)
        promote(registry, "v-broken")

    return promote_it


def _pointer_made_a_folder(registry: Path, clip: Path) -> None:
    (registry / "current").unlink()
    (registry / "current").mkdir()


@pytest.mark.parametrize(
    "break_registry",
    [
        _broken_head(lambda path: path.write_bytes(b"this is not a keras file")),
        _broken_head(write_unknown_layer_head),
        # A hand-edited (or half-restored) pointer: the check for a promotion read it outside its
        # guard, and a pointer it could not read stopped the daemon.
        lambda registry, clip: (registry / "current").write_bytes(b"\xff\xfe\n"),
        _pointer_made_a_folder,
    ],
    ids=["not-a-keras-file", "unknown-layer-class", "pointer-not-text", "pointer-a-folder"],
)
def test_a_head_that_fails_to_load_leaves_the_old_one_serving(
    start_daemon: Callable[..., RunningDaemon],
    tmp_path: Path,
    tiny_clip: Path,
    caplog: pytest.LogCaptureFixture,
    break_registry: Callable[[Path, Path], object],
) -> None:
    registry = tmp_path / "data" / "models"
    _register(registry, tiny_clip, "v-good")
    promote(registry, "v-good")
    running = start_daemon()
    database = tmp_path / "data" / "results.sqlite3"

    break_registry(registry, tiny_clip)
    wait_for(lambda: "keeping head v-good" in caplog.text, what="the failed reload to be logged")
    write_bmp(tmp_path / "inbox" / "x.bmp")
    wait_for(lambda: len(_versions(database)) == 1, what="a row")

    assert _versions(database) == ["v-good"]
    assert running.thread.is_alive()
    assert caplog.text.count("keeping head v-good") == 1, "said once, not at every batch"


def test_sighup_reloads_and_the_daemon_keeps_running(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = make_config()
    log = tmp_path / "daemon.log"
    process = start_watch_process(config, log)
    try:
        # A frame through first: the loop runs, so the signal relay is in place ("watching" is
        # logged before it is, when SIGHUP would still end the process by its default).
        write_bmp(tmp_path / "inbox" / "x.bmp")
        wait_for(lambda: files_under(tmp_path / "processed") == ["x.bmp"], timeout=120, what="a first frame")
        process.send_signal(signal.SIGHUP)
        # The forced reload loads the serving head again (zero-shot here: the log says so twice).
        wait_for(lambda: log.read_text().count("no trained head in") == 2, what="SIGHUP to reload the head")
        write_bmp(tmp_path / "inbox" / "y.bmp", seed=1)
        wait_for(
            lambda: files_under(tmp_path / "processed") == ["x.bmp", "y.bmp"], what="a frame after SIGHUP"
        )
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_embeddings_can_be_switched_off(make_config: Callable[..., Path], tmp_path: Path) -> None:
    from watcher.commands.main import main

    config = make_config(database={"store_embeddings": False})
    write_bmp(tmp_path / "inbox" / "x.bmp")
    assert main(["watch", "--once", "--config", str(config)]) == 0
    rows = query(
        tmp_path / "data" / "results.sqlite3", "SELECT status, embedding, embedding_model FROM results"
    )
    assert rows == [("ok", None, None)]
