"""Fitting the head on extracted features: the stratified split, the Keras fit with its progress,
the threshold."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from model.keras_head import build_head_model, import_keras
from model.progress import Progress


@dataclass(frozen=True)
class SplitFractions:
    validation: float
    test: float

    def minimum_per_class(self) -> int:
        # Enough that validation and test each get at least two images of every class.
        return max(6, math.ceil(2 / min(self.validation, self.test)) + 2)


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # indices
    validation: np.ndarray
    test: np.ndarray


def stratified_split(
    labels: np.ndarray, *, keys: Sequence[str], fractions: SplitFractions, seed: int
) -> Split:
    """Each class split in its proportions, each image placed by a keyed hash of its `key` (its
    content hash): in each class the images whose hashes come first are the test split, the next
    the validation split. An image keeps its place as the folder grows (new images only push it
    back in its class's order): a head trained on a folder is tested, in a run on the grown one,
    on images it did not learn, except near a border (see model.train_run, which leaves those out)."""
    order = np.array([hashlib.sha256(f"{seed}:{key}".encode()).digest() for key in keys], dtype=object)
    parts: dict[str, list[np.ndarray]] = {"train": [], "validation": [], "test": []}
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        ranked = members[np.argsort(order[members], kind="stable")]
        test = math.ceil(len(ranked) * fractions.test)
        # Both round up: at fractions summing to 0.8 a small class (8 at 0.4 and 0.4) would keep
        # no training image, and the head and the logistic probe would never see that class.
        validation = min(math.ceil(len(ranked) * fractions.validation), len(ranked) - test - 1)
        parts["test"].append(ranked[:test])
        parts["validation"].append(ranked[test : test + validation])
        parts["train"].append(ranked[test + validation :])
    return Split(**{name: np.sort(np.concatenate(chosen)).astype(np.intp) for name, chosen in parts.items()})


@dataclass(frozen=True)
class FitSettings:
    epochs: int
    batch_size: int
    patience: int
    learning_rate: float
    seed: int


def balanced_class_weights(labels: np.ndarray) -> dict[int, float] | None:
    """Weights that make both classes count equally, or None when they are already balanced."""
    counts = np.bincount(labels, minlength=2)
    if counts.min() == counts.max():
        return None
    return {cls: float(len(labels) / (2 * counts[cls])) for cls in (0, 1)}


def fit_head(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_validation: np.ndarray,
    y_validation: np.ndarray,
    *,
    settings: FitSettings,
    progress: bool = True,
    stream: TextIO | None = None,
) -> tuple[Any, dict[str, list[float]]]:
    """The research script's training, with its early stopping; returns the model and its history.

    With `progress`, every epoch is reported on `stream` (standard error by default): a bar on a
    terminal, plain lines elsewhere (see `Progress`), then one line on how the fit ended.
    """
    keras = import_keras()
    keras.utils.set_random_seed(settings.seed)
    model = build_head_model(x_train.shape[1], learning_rate=settings.learning_rate)
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=settings.patience, restore_best_weights=True
        )
    ]
    reporter = Progress(total=settings.epochs, desc="epoch", stream=stream) if progress else None
    if reporter is not None:
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda _, logs: reporter.advance(note=epoch_note(logs))
            )
        )
    fitted = model.fit(
        x_train,
        y_train.astype(np.float32),
        validation_data=(x_validation, y_validation.astype(np.float32)),
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        class_weight=balanced_class_weights(y_train),
        callbacks=callbacks,
        verbose=0,
    )
    history = {name: [float(value) for value in values] for name, values in fitted.history.items()}
    if reporter is not None:
        reporter.close(note=fit_outcome(history, settings=settings))
    return model, history


def epoch_note(logs: Mapping[str, Any] | None) -> str:
    """`loss 0.4123, val loss 0.3981` (and accuracies) from the logs Keras hands a callback."""
    logs = logs or {}
    names = [("loss", "loss"), ("val_loss", "val loss"), ("accuracy", "acc"), ("val_accuracy", "val acc")]
    return ", ".join(f"{label} {float(logs[key]):.4f}" for key, label in names if key in logs)


def best_epoch(history: Mapping[str, list[float]]) -> int | None:
    """The epoch (from 1) with the lowest validation loss: the one whose weights are kept."""
    val_loss = history.get("val_loss") or []
    return int(np.argmin(val_loss)) + 1 if val_loss else None


def fit_outcome(history: Mapping[str, list[float]], *, settings: FitSettings) -> str:
    """One line on how a fit ended: epochs run, early stop or not, the best epoch kept."""
    run = len(history.get("loss", []))
    best = best_epoch(history)
    how = (
        f"stopped early after {run} epochs (no lower val loss in {settings.patience})"
        if run < settings.epochs
        else f"ran all {run} epochs"
    )
    if best is None:
        return f"fit: {how}"
    return f"fit: {how}; kept epoch {best} (val loss {history['val_loss'][best - 1]:.4f})"


def choose_threshold(y_validation: np.ndarray, positive: np.ndarray) -> float:
    """The cut-off with the best balanced accuracy on the validation split (ties: nearest 0.5)."""
    candidates = np.unique(np.concatenate([[0.5], positive]))
    midpoints = (candidates[:-1] + candidates[1:]) / 2 if len(candidates) > 1 else candidates
    best, best_score = 0.5, -1.0
    for threshold in sorted(np.concatenate([[0.5], midpoints]), key=lambda t: abs(t - 0.5)):
        score = balanced_accuracy_score(y_validation, (positive >= threshold).astype(int))
        if score > best_score + 1e-12:
            best, best_score = float(threshold), score
    return best
