"""`cctv-gender dataset export DIR`: reviewed frames become the labelled folder `train --data`
reads, the review's label winning over the model's, `unsure` left out, with a manifest."""

from __future__ import annotations

import csv
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from model.dataset import scan_labelled_folder
from model.synthetic import bmp_bytes
from tests.helpers import seed_results
from watcher.commands.main import main
from watcher.store.engine import make_engine
from watcher.store.reviews import ReviewLabel, record_review

BASE = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


@pytest.fixture
def reviewed(make_config: Callable[..., Path], tmp_path: Path, database_url: str) -> Path:
    """Six frames: 1 reviewed female (the model said male), 2 reviewed unsure, 3 reviewed male
    twice (first female), 4 not reviewed, 5 reviewed but its file is gone, 6 forged outside."""
    processed = tmp_path / "processed" / "cam-07"
    processed.mkdir(parents=True)
    (tmp_path / "data").mkdir()
    rows: list[dict[str, Any]] = []
    for index in range(1, 7):
        frame = processed / f"{index}.bmp"
        if index != 5:
            frame.write_bytes(bmp_bytes(width=32, height=24, seed=index))
        stored = tmp_path / "elsewhere.bmp" if index == 6 else frame
        rows.append({"at": BASE + timedelta(minutes=index), "camera": "cam-07", "label": "male",
                     "probability": 0.7, "stored_path": str(stored)})  # fmt: skip
    (tmp_path / "elsewhere.bmp").write_bytes(bmp_bytes(width=32, height=24, seed=9))
    seed_results(database_url, rows)
    engine = make_engine(database_url, busy_timeout_ms=1000)
    for result_id, label in (
        (1, "female"),
        (2, "unsure"),
        (3, "female"),
        (3, "male"),
        (5, "male"),
        (6, "male"),
    ):
        record_review(engine, result_id=result_id, label=ReviewLabel(label), reviewer="test")
    engine.dispose()
    return make_config(database={"url": database_url})


def _manifest(folder: Path) -> dict[int, dict[str, str]]:
    with (folder / "manifest.csv").open(newline="") as file:
        return {int(row["result_id"]): row for row in csv.DictReader(file)}


def test_reviewed_frames_become_a_training_folder(reviewed: Path, tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    assert main(["dataset", "export", str(out), "--reviewed", "--config", str(reviewed)]) == 0
    assert sorted(path.name for path in (out / "FEMALE").iterdir()) == ["1.bmp"]
    assert sorted(path.name for path in (out / "MALE").iterdir()) == ["3.bmp"]
    # Hard links: the same file, no copy of the frame's bytes.
    assert (out / "FEMALE" / "1.bmp").stat().st_ino == (
        tmp_path / "processed" / "cam-07" / "1.bmp"
    ).stat().st_ino
    manifest = _manifest(out)
    assert sorted(manifest) == [1, 2, 3, 5, 6]  # 4 never reviewed
    first = manifest[1]
    assert (first["label"], first["label_from"], first["how"], first["exported_as"]) == (
        "female", "review", "link", "FEMALE/1.bmp",
    )  # fmt: skip
    assert (manifest[2]["label"], manifest[2]["how"], manifest[2]["exported_as"]) == (
        "unsure", "left out: reviewed unsure", "",
    )  # fmt: skip
    assert manifest[5]["how"] == "missing" and manifest[5]["exported_as"] == ""
    assert manifest[6]["how"].startswith("refused")
    images = scan_labelled_folder(out)  # what `train --data` reads
    assert [(image.path.name, str(image.label)) for image in images] == [
        ("1.bmp", "female"),
        ("3.bmp", "male"),
    ]


def test_without_reviewed_the_model_labels_the_rest(reviewed: Path, tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    assert main(["dataset", "export", str(out), "--config", str(reviewed)]) == 0
    manifest = _manifest(out)
    assert manifest[4]["label"] == "male" and manifest[4]["label_from"] == "model"
    assert manifest[2]["exported_as"] == ""  # unsure stays out even so
    assert sorted(path.name for path in (out / "MALE").iterdir()) == ["3.bmp", "4.bmp"]


def test_a_folder_with_something_in_it_is_refused(reviewed: Path, tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as stopped:
        main(["dataset", "export", str(out), "--config", str(reviewed)])
    assert stopped.value.code == 2
    assert sorted(path.name for path in out.iterdir()) == ["notes.txt"]


def test_a_failed_export_leaves_no_folder_behind(
    reviewed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import watcher.commands.dataset as dataset

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dataset, "_export_one", broken)
    out = tmp_path / "dataset"
    assert main(["dataset", "export", str(out), "--reviewed", "--config", str(reviewed)]) == 1
    assert not out.exists() and [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


def test_an_empty_folder_named_through_a_link_takes_the_export(reviewed: Path, tmp_path: Path) -> None:
    # "DIR must be new or empty": a link to an empty folder (datasets on a share) is that; it
    # failed with "Not a directory" (the rename went to the link's name), exit 1.
    real = tmp_path / "datasets" / "reviewed"
    real.mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    assert main(["dataset", "export", str(tmp_path / "link"), "--reviewed", "--config", str(reviewed)]) == 0
    assert sorted(path.name for path in (real / "MALE").iterdir()) == ["3.bmp"]
    assert (real / "manifest.csv").is_file()
    assert (tmp_path / "link").is_symlink() and (tmp_path / "link").resolve() == real
    assert [path.name for path in real.parent.iterdir()] == ["reviewed"]  # no work folder left


@pytest.mark.parametrize("named_as", [".", "../reviewed"])
def test_the_folder_one_stands_in_is_refused_with_a_message(
    reviewed: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    named_as: str,
) -> None:
    # Replaced by the export (built beside it, renamed into place), it left the shell standing in
    # the removed folder: the printed manifest not there, `ls` empty, os.getcwd() failing (found
    # by review). Before that, "Invalid argument", exit 1.
    real = tmp_path / "datasets" / "reviewed"
    real.mkdir(parents=True)
    monkeypatch.chdir(real)
    with pytest.raises(SystemExit) as stopped:
        main(["dataset", "export", named_as, "--reviewed", "--config", str(reviewed)])
    assert stopped.value.code == 2
    assert "is the folder you are in" in capsys.readouterr().err
    assert list(real.iterdir()) == [] and [path.name for path in real.parent.iterdir()] == ["reviewed"]


@pytest.mark.parametrize("site_folder", ["inbox", "processed", "failed"])
def test_a_folder_inside_the_daemons_folders_is_refused(
    reviewed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], site_folder: str
) -> None:
    # Found by an operator's mistake: an export into inbox/ was found there by the daemon, and
    # every exported frame was classified and counted a second time (as camera `training`);
    # in processed/ or failed/ it mixes with the daemon's moves. `backfill` refuses them too.
    (tmp_path / site_folder).mkdir(exist_ok=True)
    out = tmp_path / site_folder / "training"
    with pytest.raises(SystemExit) as stopped:
        main(["dataset", "export", str(out), "--config", str(reviewed)])
    assert stopped.value.code == 2
    assert f"paths.{site_folder}" in capsys.readouterr().err
    assert not out.exists() and [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []
