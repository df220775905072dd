"""Training at its corners: the engine table on the compared images, the largest fractions,
rollbacks after a promotion cut short."""

from __future__ import annotations

import copy
import errno
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import watcher.pipeline.assembly as assembly
from model.engine_choice import Engines
from model.registry import HEAD_FILE, current_version, promote, rollback
from model.runtime import Runtime
from model.synthetic import make_labelled_folder
from model.training import SplitFractions, stratified_split
from watcher.commands.main import main


def _train(config: Path, data: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--config", str(config), *extra])


def test_the_engine_table_scores_every_engine_on_the_same_test_images(
    make_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """report.md: 'The same test images through every engine'. The serving engine's row is the
    comparison's (the test images the current head did not learn), the other engines' rows are on
    the whole test split. A twin engine (identical features) must then score exactly the same."""
    real = assembly.load_engine_set

    def with_a_twin(config: Any) -> Engines:
        engines = real(config)
        twin = copy.copy(engines.chosen)
        twin.runtime = Runtime(device=engines.chosen.runtime.device, precision="fp32", engine="twin")
        return Engines(chosen=engines.chosen, passing={**engines.passing, twin.runtime.tag: twin})

    monkeypatch.setattr(assembly, "load_engine_set", with_a_twin)
    config = make_config()
    registry = tmp_path / "data" / "models"
    data = make_labelled_folder(tmp_path / "labelled", per_class=30, seed=12)
    # The README's loop (test_training_edges.py): the current head, trained with another seed,
    # learnt some of the grown folder's test split.
    assert _train(config, data, "--promote", "force", "--seed", "7") == 0
    first = current_version(registry)
    grown = make_labelled_folder(tmp_path / "more", per_class=10, seed=13)
    for label in ("FEMALE", "MALE"):
        for path in (grown / label).iterdir():
            shutil.copy(path, data / label / f"new-{path.name}")

    assert _train(config, data, "--promote", "never", "--seed", "42") == 0

    (newest,) = [p for p in registry.iterdir() if (p / "metadata.json").is_file() and p.name != first]
    metadata = json.loads((newest / "metadata.json").read_text())
    engines = metadata["metrics"]["engines"]
    assert metadata["split"]["scored"] < metadata["split"]["test"]  # the scenario holds
    assert engines["twin-fp32"]["n"] == engines["torch-fp32"]["n"], {
        tag: result["n"] for tag, result in engines.items()
    }


@pytest.mark.parametrize(("validation", "test"), [(0.4, 0.4), (0.45, 0.35), (0.49, 0.31), (0.3, 0.4999)])
def test_a_class_keeps_training_images_at_the_largest_allowed_fractions(
    validation: float, test: float
) -> None:
    """validation_fraction + test_fraction may reach 0.8, and a class needs minimum_per_class()
    images (7 at 0.4 and 0.4). Both splits round up, so a class of 8 is 4 test + 4 validation +
    0 train (9 at 0.45 and 0.35): the head and the logistic probe are fitted without that class."""
    fractions = SplitFractions(validation=validation, test=test)
    for size in range(fractions.minimum_per_class(), 40):
        labels = np.array([0] * size + [1] * 40)
        split = stratified_split(
            labels, keys=[f"{i:064x}" for i in range(len(labels))], fractions=fractions, seed=1
        )
        assert np.bincount(labels[split.train], minlength=2).min() >= 1, (
            f"a class of {size}: no training image"
        )
        assert np.bincount(labels[split.validation], minlength=2).min() >= 2
        assert np.bincount(labels[split.test], minlength=2).min() >= 2


def test_a_class_with_no_training_image_is_not_a_traceback(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    """The CLI end of the finding above: 8 FEMALE images at validation 0.4 and test 0.4 (allowed,
    and above the 7 the message asks for) end in scikit-learn's ValueError, a traceback, after the
    extraction and the fit."""
    config = make_config(training={"validation_fraction": 0.4, "test_fraction": 0.4})
    data = make_labelled_folder(tmp_path / "labelled", per_class=20, seed=3)
    for path in sorted((data / "FEMALE").iterdir())[8:]:
        path.unlink()

    assert _train(config, data, "--promote", "never") in (0, 1)


def _registry_with(registry: Path, *versions: str) -> None:
    for version in versions:
        (registry / version).mkdir(parents=True)
        (registry / version / HEAD_FILE).write_bytes(b"a head")


def test_a_repromotion_that_completes_still_rolls_back_to_what_served_before(tmp_path: Path) -> None:
    """The fix must keep the uninterrupted case: a, b, a again; rollback serves b, then a."""
    registry = tmp_path / "models"
    _registry_with(registry, "a", "b")
    for version in ("a", "b", "a"):
        promote(registry, version)

    assert rollback(registry) == "b"
    assert rollback(registry) is None  # a was moved to the end of the history: b's predecessor is gone


@pytest.mark.parametrize("failing", [0, 1, 2], ids=["first write", "second write", "third write"])
def test_a_repromotion_cut_short_at_any_write_rolls_back_to_a_served_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: int
) -> None:
    """`models promote a` over [a, b] (b serving) fails at each of its atomic writes in turn (a
    full disk; a kill there leaves the same): a rollback afterwards serves the head that served
    before the current one, never zero-shot while b had served. Found by review: cut short
    after the pointer moved, before the history, it rolled back to zero-shot."""
    registry = tmp_path / "models"
    _registry_with(registry, "a", "b")
    promote(registry, "a")
    promote(registry, "b")
    replace = os.replace
    calls: list[str] = []

    def fail_at(source: Any, target: Any) -> None:
        calls.append(str(target))
        if len(calls) == failing + 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        replace(source, target)

    monkeypatch.setattr(os, "replace", fail_at)
    try:
        promote(registry, "a")
    except OSError:
        pass
    monkeypatch.setattr(os, "replace", replace)
    served = current_version(registry)
    assert served in ("a", "b")

    assert rollback(registry) == ("a" if served == "b" else "b"), (calls, served)
