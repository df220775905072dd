"""Training, evaluation, the registry and rescoring, with the tiny random-weight CLIP."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from model.clip_features import ClipFeatureExtractor
from model.evaluation import decide_promotion
from model.registry import HEAD_FILE, current_version, promotion_history
from model.synthetic import make_labelled_folder, write_bmp
from tests.helpers import query, write_unknown_layer_head
from watcher.commands.main import main

PER_CLASS = 40


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_labelled_folder(tmp_path_factory.mktemp("labelled") / "data", per_class=PER_CLASS)


@pytest.fixture
def clip_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the pictures sent through CLIP's image encoder (the real one runs)."""
    calls: list[int] = []
    original = ClipFeatureExtractor.image_features

    def counting(self: ClipFeatureExtractor, images: list) -> np.ndarray:
        calls.append(len(images))
        return original(self, images)

    monkeypatch.setattr(ClipFeatureExtractor, "image_features", counting)
    return calls


def _train(config: Path, data: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--config", str(config), *extra])


def test_train_reports_compares_and_promotes(
    make_config: Callable[..., Path], tmp_path: Path, labelled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config()

    assert _train(config, labelled) == 0

    out = capsys.readouterr().out
    registry = tmp_path / "data" / "models"
    version = current_version(registry)
    assert version is not None and f"head {version}: test split comparison" in out
    table_rows = [line for line in out.splitlines() if line.startswith("| ") and "accuracy" not in line]
    assert [row.split("|")[1].strip() for row in table_rows] == [version, "zero-shot", "logistic regression"]
    assert "promoted: accuracy" in out

    folder = registry / version
    for name in (
        "head.keras",
        "metadata.json",
        "report.md",
        "metrics.json",
        "learning_curves.png",
        "roc_curve.png",
        "confusion_matrix.png",
    ):
        assert (folder / name).is_file(), name
    metadata = json.loads((folder / "metadata.json").read_text())
    test = metadata["metrics"]["test"]
    # Chance is 0.5: the classes differ visibly, so the head must do clearly better.
    assert test["accuracy"] >= 0.8 and test["roc_auc"] >= 0.85
    assert set(metadata["metrics"]["baselines"]) == {"zero-shot", "logistic regression"}
    assert metadata["dataset"]["counts"] == {"female": PER_CLASS, "male": PER_CLASS}
    assert len(metadata["dataset_fingerprint"]) == 64
    assert {"torch", "keras", "transformers"} <= set(metadata["package_versions"])
    assert 0.0 < metadata["threshold"] < 1.0
    report = (folder / "report.md").read_text()
    assert "![ROC curve](roc_curve.png)" in report and "| zero-shot |" in report
    assert (folder / "roc_curve.png").read_bytes().startswith(b"\x89PNG")
    assert not [path for path in registry.iterdir() if path.name.startswith(".")]


def test_the_feature_cache_is_hit_on_a_second_run(
    make_config: Callable[..., Path], tmp_path: Path, clip_calls: list[int]
) -> None:
    config = make_config()
    data = make_labelled_folder(tmp_path / "labelled", per_class=20, seed=3)

    assert _train(config, data, "--promote", "never") == 0
    assert sum(clip_calls) == 40
    clip_calls.clear()

    assert _train(config, data, "--promote", "never") == 0
    assert clip_calls == []  # every image came from the cache

    write_bmp(data / "MALE" / "new.bmp", seed=99)
    assert _train(config, data, "--promote", "never") == 0
    assert sum(clip_calls) == 1  # a grown folder extracts only what is new
    assert current_version(tmp_path / "data" / "models") is None


def test_unreadable_images_are_skipped_and_listed(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config()
    data = make_labelled_folder(tmp_path / "labelled", per_class=20, seed=4)
    (data / "FEMALE" / "broken.bmp").write_bytes(b"definitely not an image")

    assert _train(config, data, "--promote", "never") == 0

    assert "1 image skipped" in capsys.readouterr().out
    (folder,) = [path for path in (tmp_path / "data" / "models").iterdir() if path.is_dir()]
    assert "| FEMALE/broken.bmp | not a recognised image format |" in (folder / "report.md").read_text()


@pytest.mark.parametrize(
    ("layout", "message", "exit_code"),
    [
        # A folder that is not a labelled one is a bad command line, found before CLIP loads.
        pytest.param(
            {"FEMALE": 20, "MALE": 20, "KIDS": 1}, "unexpected subfolders KIDS", 2, id="unknown_class"
        ),
        pytest.param({"FEMALE": 20}, "missing class folder MALE", 2, id="missing_class"),
        # Too few readable images is known only once they are read.
        pytest.param(
            {"FEMALE": 20, "MALE": 0}, "MALE has 0; each class needs at least 16", 1, id="empty_class"
        ),
        pytest.param({"FEMALE": 5, "MALE": 5}, "FEMALE has 5, MALE has 5", 1, id="too_small"),
    ],
)
def test_unusable_folders_stop_with_a_message(
    make_config: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    layout: dict[str, int],
    message: str,
    exit_code: int,
) -> None:
    config = make_config()
    for offset, (name, count) in enumerate(layout.items()):
        (tmp_path / "labelled" / name).mkdir(parents=True)
        for index in range(count):  # no picture twice: a copy counts once
            write_bmp(tmp_path / "labelled" / name / f"{index}.bmp", seed=1000 * offset + index)

    try:
        code = _train(config, tmp_path / "labelled")
    except SystemExit as usage:  # argparse's error(): exit 2
        code = usage.code
    assert code == exit_code

    err = capsys.readouterr().err.strip().splitlines()
    assert "error:" in err[-1] and message in err[-1]


def test_class_folders_match_in_any_case(make_config: Callable[..., Path], tmp_path: Path) -> None:
    config = make_config()
    data = make_labelled_folder(tmp_path / "labelled", per_class=20, seed=5)
    (data / "FEMALE").rename(data / "female")
    (data / "MALE").rename(data / "Male")
    assert _train(config, data, "--promote", "never") == 0


def _result(accuracy: float, log_loss: float) -> dict:
    return {"accuracy": accuracy, "log_loss": log_loss}


@pytest.mark.parametrize(
    ("results", "current", "promoted"),
    [
        pytest.param(
            {"new": _result(0.9, 0.3), "zero-shot": _result(0.6, 0.7)}, None, True, id="beats_zero_shot"
        ),
        pytest.param(
            {"new": _result(0.5, 0.7), "zero-shot": _result(0.6, 0.7)}, None, False, id="loses_to_zero_shot"
        ),
        pytest.param(
            {"new": _result(0.9, 0.3), "zero-shot": _result(0.6, 0.7), "old": _result(0.92, 0.2)},
            "old",
            False,
            id="loses_to_current",
        ),
        pytest.param(
            {"new": _result(0.9, 0.2), "zero-shot": _result(0.6, 0.7), "old": _result(0.9, 0.3)},
            "old",
            True,
            id="tie_broken_by_log_loss",
        ),
    ],
)
def test_auto_promotion_needs_to_beat_current_and_zero_shot(
    results: dict, current: str | None, promoted: bool
) -> None:
    decision, reason = decide_promotion("auto", "new", results, current)
    assert decision is promoted
    assert reason.startswith("promoted" if promoted else "not promoted")


def test_promote_and_rollback_move_the_pointer(
    make_config: Callable[..., Path], tmp_path: Path, labelled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config()
    registry = tmp_path / "data" / "models"
    assert _train(config, labelled, "--promote", "force", "--seed", "1") == 0
    first = current_version(registry)
    assert _train(config, labelled, "--promote", "force", "--seed", "2") == 0
    second = current_version(registry)
    assert first and second and first != second
    capsys.readouterr()

    assert main(["models", "list", "--config", str(config)]) == 0
    listing = capsys.readouterr().out
    assert f"* {second}" in listing and f"  {first}" in listing

    assert main(["models", "rollback", "--config", str(config)]) == 0
    assert current_version(registry) == first
    assert main(["models", "promote", second, "--config", str(config)]) == 0
    assert current_version(registry) == second
    assert promotion_history(registry) == [first, second]
    assert main(["models", "rollback", "--config", str(config)]) == 0
    assert main(["models", "rollback", "--config", str(config)]) == 0
    assert current_version(registry) is None  # back to zero-shot
    assert "serving zero-shot CLIP" in capsys.readouterr().out

    with pytest.raises(SystemExit) as refused:  # a version that is not there: a bad command line
        main(["models", "promote", "no-such-version", "--config", str(config)])
    assert refused.value.code == 2
    assert "no-such-version" in capsys.readouterr().err


def test_a_head_for_another_clip_cannot_be_promoted(
    make_config: Callable[..., Path], tmp_path: Path, labelled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config()
    assert _train(config, labelled, "--promote", "never") == 0
    (version_dir,) = [path for path in (tmp_path / "data" / "models").iterdir() if path.is_dir()]
    metadata = json.loads((version_dir / "metadata.json").read_text())
    metadata["clip_model"] = "openai/clip-vit-large-patch14"
    metadata.pop("clip_identity", None)  # recorded by name only, as a head from a Hub model would be
    (version_dir / "metadata.json").write_text(json.dumps(metadata))
    capsys.readouterr()

    assert main(["models", "promote", version_dir.name, "--config", str(config)]) == 1

    assert "refused: it was trained on CLIP 'openai/clip-vit-large-patch14'" in capsys.readouterr().err
    assert current_version(tmp_path / "data" / "models") is None


def test_evaluate_a_registered_head_and_zero_shot(
    make_config: Callable[..., Path], tmp_path: Path, labelled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config()
    assert _train(config, labelled) == 0
    version = current_version(tmp_path / "data" / "models")
    capsys.readouterr()

    assert main(["evaluate", "--data", str(labelled), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"{version} on {labelled} ({2 * PER_CLASS} images, 0 skipped)" in out
    accuracy = float(next(line for line in out.splitlines() if line.startswith(f"| {version}")).split("|")[2])
    assert accuracy >= 0.8

    assert main(["evaluate", "--data", str(labelled), "--model", "zero-shot", "--config", str(config)]) == 0
    assert "| zero-shot:" in capsys.readouterr().out


def test_rescore_relabels_stored_rows_without_clip(
    make_config: Callable[..., Path],
    tmp_path: Path,
    labelled: Path,
    clip_calls: list[int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = make_config()
    (tmp_path / "inbox").mkdir()
    for index in range(6):
        source = sorted((labelled / ("FEMALE" if index % 2 else "MALE")).iterdir())[index]
        (tmp_path / "inbox" / f"{index}.bmp").write_bytes(source.read_bytes())
    assert main(["watch", "--once", "--config", str(config)]) == 0
    database = tmp_path / "data" / "results.sqlite3"
    versions = {version for (version,) in query(database, "SELECT model_version FROM results")}
    assert len(versions) == 1 and versions.pop().startswith("zero-shot:")
    assert all(
        blob is not None and len(blob) == 2 * 16
        for (blob,) in query(database, "SELECT embedding FROM results")
    )
    assert _train(config, labelled, "--promote", "force") == 0
    version = current_version(tmp_path / "data" / "models")
    clip_calls.clear()
    capsys.readouterr()

    assert main(["rescore", "--since", "1h", "--config", str(config)]) == 0

    assert clip_calls == []
    assert f"rescored 6 rows with {version}" in capsys.readouterr().out
    rows = query(database, "SELECT source_path, label, model_version FROM results ORDER BY source_path")
    assert {row[2] for row in rows} == {version}
    # Odd frames came from FEMALE/, even ones from MALE/: the trained head tells them apart.
    expected = ["female" if int(path.split(".")[0]) % 2 else "male" for path, _, _ in rows]
    assert [label for _, label, _ in rows] == expected

    # A head file Keras cannot load (here: a layer class it does not know) is one line, not a
    # traceback, and the rows stay as they are.
    write_unknown_layer_head(tmp_path / "data" / "models" / version / HEAD_FILE)
    capsys.readouterr()
    assert main(["rescore", "--since", "1h", "--config", str(config)]) != 0
    assert f"cannot load head {version}" in capsys.readouterr().err
    labels = query(database, "SELECT label FROM results ORDER BY source_path")
    assert [label for (label,) in labels] == expected
