"""`cctv-gender watch --once` end to end: real files, real SQLite, the tiny CLIP loaded from disk."""

from __future__ import annotations

import gc
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from model.clip_features import PREPROCESSING_VERSION
from model.keras_head import build_head_model
from model.registry import HeadMetadata, register_head, set_current
from model.synthetic import bmp_bytes, write_bmp
from tests.helpers import BOMB_BMP, files_under, query
from watcher.commands.main import main

FRAMES = {
    # relative path: (width, height, mode)
    "cam-01/a.bmp": (640, 480, "RGB"),
    "cam-01/b.BMP": (320, 240, "P"),
    "cam-02/c.bmp": (64, 48, "L"),
    "cam-02/sub/d.bmp": (33, 17, "RGB"),
    "e.bmp": (224, 224, "RGB"),
    "f with spaces é.bmp": (100, 300, "P"),
}


def _drop_frames(inbox: Path) -> None:
    for index, (relative, (width, height, mode)) in enumerate(FRAMES.items()):
        write_bmp(inbox / relative, width=width, height=height, mode=mode, seed=index)


def _rows(database: Path, columns: str = "source_path, camera, status, label, model_version") -> list[tuple]:
    return query(database, f"SELECT {columns} FROM results ORDER BY source_path")


def test_every_frame_gets_one_row_and_moves_to_processed(
    make_config: Callable[..., Path], tmp_path: Path, tiny_clip: Path
) -> None:
    config = make_config()
    _drop_frames(tmp_path / "inbox")
    (tmp_path / "inbox" / "notes.txt").write_text("not a frame")

    assert main(["watch", "--once", "--config", str(config)]) == 0

    database = tmp_path / "data" / "results.sqlite3"
    rows = _rows(database)
    assert [row[0] for row in rows] == sorted(FRAMES)
    expected_version = f"zero-shot:{tiny_clip.name}"
    for source, camera, status, label, version in rows:
        assert status == "ok"
        assert label in ("female", "male")
        assert version == expected_version
        assert camera == (source.split("/")[0] if "/" in source else None)
    assert files_under(tmp_path / "processed") == sorted(FRAMES)
    # Only the non-frame is left in the inbox; the in-progress area is empty.
    assert files_under(tmp_path / "inbox") == ["notes.txt"]


def test_a_row_records_the_file(make_config: Callable[..., Path], tmp_path: Path) -> None:
    config = make_config()
    frame = write_bmp(tmp_path / "inbox" / "cam-09" / "x.bmp", width=640, height=480)
    data = frame.read_bytes()
    os.utime(frame, (1_700_000_000, 1_700_000_000))

    assert main(["watch", "--once", "--config", str(config)]) == 0

    (row,) = query(
        tmp_path / "data" / "results.sqlite3",
        "SELECT sha256, size_bytes, width, height, file_mtime, received_at, processed_at, "
        "stored_path, probability, error FROM results",
    )
    sha256, size, width, height, mtime, received, processed, stored, probability, error = row
    import hashlib

    assert sha256 == hashlib.sha256(data).hexdigest()
    assert (size, width, height) == (len(data), 640, 480)
    assert mtime == "2023-11-14 22:13:20.000000"  # UTC, as any SQL client reads it
    assert received <= processed
    assert stored == str(tmp_path / "processed" / "cam-09" / "x.bmp")
    assert 0.0 <= probability <= 1.0 and error is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"hello, this is not an image at all", "not a recognised image format", id="not_bmp"),
        pytest.param(
            b"BM" + (60).to_bytes(4, "little") + b"\0" * 54, "cannot decode", id="garbage_bmp_header"
        ),
        pytest.param(
            BOMB_BMP,
            "too large",
            id="decompression_bomb",
        ),
    ],
)
def test_corrupt_frames_fail_with_a_reason(
    make_config: Callable[..., Path], tmp_path: Path, data: bytes, reason: str
) -> None:
    config = make_config()
    (tmp_path / "inbox" / "cam-01").mkdir(parents=True)
    (tmp_path / "inbox" / "cam-01" / "bad.bmp").write_bytes(data)
    write_bmp(tmp_path / "inbox" / "cam-01" / "good.bmp")

    assert main(["watch", "--once", "--config", str(config)]) == 0

    rows = query(
        tmp_path / "data" / "results.sqlite3",
        "SELECT source_path, status, error, label FROM results ORDER BY source_path",
    )
    assert rows[0][:2] == ("cam-01/bad.bmp", "failed") and reason in rows[0][2] and rows[0][3] is None
    assert rows[1][:3] == ("cam-01/good.bmp", "ok", None)
    assert files_under(tmp_path / "failed") == ["cam-01/bad.bmp"]
    assert files_under(tmp_path / "processed") == ["cam-01/good.bmp"]


def test_special_files_are_failed_without_being_opened(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = make_config()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    os.mkfifo(inbox / "pipe.bmp")  # opening it would block the daemon forever
    secret = tmp_path / "secret.bmp"
    write_bmp(secret)
    (inbox / "link.bmp").symlink_to(secret)

    assert main(["watch", "--once", "--config", str(config)]) == 0

    rows = query(
        tmp_path / "data" / "results.sqlite3",
        "SELECT source_path, status, error FROM results ORDER BY source_path",
    )
    assert [row[:2] for row in rows] == [("link.bmp", "failed"), ("pipe.bmp", "failed")]
    assert all("not a regular file" in row[2] for row in rows)
    assert secret.exists() and (tmp_path / "failed" / "link.bmp").is_symlink()


def test_name_clashes_in_processed_get_a_suffix(make_config: Callable[..., Path], tmp_path: Path) -> None:
    config = make_config()
    write_bmp(tmp_path / "processed" / "cam-01" / "x.bmp", seed=1)
    before = (tmp_path / "processed" / "cam-01" / "x.bmp").read_bytes()
    write_bmp(tmp_path / "inbox" / "cam-01" / "x.bmp", seed=2)

    assert main(["watch", "--once", "--config", str(config)]) == 0
    # The same name dropped again later, with new content, is a new frame and a new row.
    write_bmp(tmp_path / "inbox" / "cam-01" / "x.bmp", seed=3)
    assert main(["watch", "--once", "--config", str(config)]) == 0

    assert (tmp_path / "processed" / "cam-01" / "x.bmp").read_bytes() == before
    stored = query(tmp_path / "data" / "results.sqlite3", "SELECT stored_path FROM results ORDER BY id")
    assert [Path(path).name for (path,) in stored] == ["x-1.bmp", "x-2.bmp"]
    assert files_under(tmp_path / "processed") == ["cam-01/x-1.bmp", "cam-01/x-2.bmp", "cam-01/x.bmp"]


def test_frames_still_being_written_are_left_for_the_next_run(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = make_config(inbox={"settle_ms": 0, "readiness_timeout_s": 60})
    data = bmp_bytes(width=64, height=48)
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "writing.bmp").write_bytes(data[:100])
    stale = tmp_path / "inbox" / "stale.bmp"
    stale.write_bytes(data[:200])
    past = time.time() - 120
    os.utime(stale, (past, past))

    assert main(["watch", "--once", "--config", str(config)]) == 0

    rows = query(tmp_path / "data" / "results.sqlite3", "SELECT source_path, status, error FROM results")
    assert rows == [("stale.bmp", "failed", f"truncated: 200 of {len(data)} declared bytes")]
    assert files_under(tmp_path / "inbox") == ["writing.bmp"]


def test_a_trained_head_in_the_registry_is_served(
    make_config: Callable[..., Path], tmp_path: Path, tiny_clip: Path
) -> None:
    config = make_config()
    registry = tmp_path / "data" / "models"
    model = build_head_model(16)
    model.fit(
        np.random.default_rng(0).normal(size=(8, 16)).astype("float32"),
        np.array([0, 1] * 4),
        epochs=1,
        verbose=0,
    )
    metadata = HeadMetadata(
        version="20261125-test",
        clip_model=str(tiny_clip),
        feature_size=16,
        preprocessing_version=PREPROCESSING_VERSION,
        threshold=0.5,
    )
    register_head(registry, model, metadata)
    set_current(registry, metadata.version)
    write_bmp(tmp_path / "inbox" / "x.bmp")

    assert main(["watch", "--once", "--config", str(config)]) == 0

    assert query(tmp_path / "data" / "results.sqlite3", "SELECT status, model_version FROM results") == [
        ("ok", "20261125-test")
    ]
    saved = json.loads((registry / "20261125-test" / "metadata.json").read_text())
    assert saved["label_order"] == ["female", "male"]


def test_a_head_for_another_clip_is_refused(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config()
    registry = tmp_path / "data" / "models"
    metadata = HeadMetadata(
        version="other",
        clip_model="openai/clip-vit-large-patch14",
        feature_size=16,
        preprocessing_version=PREPROCESSING_VERSION,
    )
    register_head(registry, build_head_model(16), metadata)
    set_current(registry, "other")
    write_bmp(tmp_path / "inbox" / "x.bmp")

    assert main(["watch", "--once", "--config", str(config)]) == 1

    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(
        "cctv-gender: error: head other refused: it was trained on CLIP 'openai/clip-vit-large-patch14'"
    )
    assert files_under(tmp_path / "inbox") == ["x.bmp"]


def test_a_missing_clip_model_is_a_clear_error(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    config = make_config(model={"clip": str(empty)})

    assert main(["watch", "--once", "--config", str(config)]) == 1

    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"cctv-gender: error: cannot load CLIP model '{empty}'")


def test_zero_shot_prompts_come_from_the_config(make_config: Callable[..., Path], tmp_path: Path) -> None:
    # Swapping the prompts swaps the classes: the same frames must get the opposite labels.
    frames = [write_bmp(tmp_path / "frames" / f"{i}.bmp", seed=i) for i in range(6)]

    def labels_with(female: list[str], male: list[str], folder: str) -> list[str]:
        config = make_config(**{"model.zero_shot": {"female": female, "male": male}}, paths={"data": folder})
        for frame in frames:
            (tmp_path / "inbox").mkdir(exist_ok=True)
            (tmp_path / "inbox" / frame.name).write_bytes(frame.read_bytes())
        assert main(["watch", "--once", "--config", str(config)]) == 0
        return [
            label
            for (label,) in query(
                tmp_path / folder / "results.sqlite3", "SELECT label FROM results ORDER BY source_path"
            )
        ]

    first = labels_with(["a photo of a woman"], ["a photo of a man"], "data-1")
    swapped = labels_with(["a photo of a man"], ["a photo of a woman"], "data-2")
    opposite = {"female": "male", "male": "female"}
    assert swapped == [opposite[label] for label in first]


def test_the_daemon_starts_without_the_collector_and_works_with_it(
    make_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Start-up (torch, the model) runs with the garbage collector off and no collection; the
    frames are handled with it on, start-up's objects frozen out of its sight; it is on after."""
    import watcher.pipeline.assembly as assembly

    seen: dict[str, object] = {}
    real_build = assembly.build_daemon

    def collections() -> list[int]:
        return [generation["collections"] for generation in gc.get_stats()]

    def build_daemon(*args: object, **kwargs: object) -> object:
        seen["building"], seen["collections_before"] = gc.isenabled(), collections()
        daemon = real_build(*args, **kwargs)  # type: ignore[arg-type]
        seen["built_objects"] = len(gc.get_objects())
        real_run = daemon.run

        def run(*, once: bool) -> object:
            seen["working"], seen["collections_after"] = gc.isenabled(), collections()
            seen["unfrozen_objects"] = len(gc.get_objects())
            return real_run(once=once)

        daemon.run = run  # type: ignore[method-assign]
        return daemon

    monkeypatch.setattr(assembly, "build_daemon", build_daemon)
    config = make_config()
    write_bmp(tmp_path / "inbox" / "a.bmp", width=64, height=48)

    assert main(["watch", "--once", "--config", str(config)]) == 0

    assert seen["building"] is False and seen["working"] is True
    # No collection ran between the start of the build and the frames' work (nor one to free
    # start-up's little garbage, which would cost half of what starting without it saves).
    assert seen["collections_after"] == seen["collections_before"]
    # What was built is frozen: the collector sees a few objects made since, not the daemon's.
    assert isinstance(seen["built_objects"], int) and isinstance(seen["unfrozen_objects"], int)
    assert seen["unfrozen_objects"] < seen["built_objects"] // 10
    assert gc.isenabled()
    assert files_under(tmp_path / "processed") == ["a.bmp"]


@pytest.mark.parametrize(
    ("command", "module"),
    [(["db", "upgrade"], "db"), (["completion", "bash"], "completion"), (["models", "fetch"], "fetch")],
    ids=" ".join,
)
def test_other_commands_work_with_the_collector_on_and_leave_it_on(
    command: list[str],
    module: str,
    make_config: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each way main() reaches a command other than `watch` turns the collector back on before
    the command's work (`models fetch` would download a model with it off)."""
    import importlib

    commands = importlib.import_module(f"watcher.commands.{module}")
    seen = []

    def run(*_args: object) -> int:
        seen.append(gc.isenabled())
        return 0

    monkeypatch.setattr(commands, "run", run)
    config = make_config()
    arguments = {"db": ["--config", str(config)], "fetch": ["--to", str(tmp_path / "model")]}
    assert main([*command, *arguments.get(module, [])]) == 0
    assert seen == [True]
    # A start that ends before any command's work (a config it cannot read) leaves it on too.
    broken = tmp_path / "broken.toml"
    broken.write_text("[batch]\nsize = 'many'\n")
    assert main(["watch", "--once", "--config", str(broken)]) != 0
    assert gc.isenabled()


def test_the_daemon_s_process_switches_threads_at_the_configured_interval(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    """batch.gil_switch_interval_ms is the process's switch interval once the daemon is built:
    every GPU launch and system call waits up to that long for the GIL beside a busy thread."""
    import sys

    sys.setswitchinterval(0.005)  # Python's own (conftest restores the suite's after the test)
    config = make_config(batch={"gil_switch_interval_ms": 0.25})
    write_bmp(tmp_path / "inbox" / "a.bmp", width=32, height=24, seed=1)

    assert main(["watch", "--once", "--config", str(config)]) == 0

    assert sys.getswitchinterval() == pytest.approx(0.00025)
    assert files_under(tmp_path / "processed") == ["a.bmp"]
