"""Fitting the head on extracted features: the stratified split, the Keras fit, the threshold."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import train_test_split

from model.keras_head import build_head_model, import_keras


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


def stratified_split(labels: np.ndarray, *, fractions: SplitFractions, seed: int) -> Split:
    indices = np.arange(len(labels))
    rest, test = train_test_split(indices, test_size=fractions.test, stratify=labels, random_state=seed)
    validation_share = fractions.validation / (1.0 - fractions.test)
    train, validation = train_test_split(
        rest, test_size=validation_share, stratify=labels[rest], random_state=seed
    )
    return Split(train=np.sort(train), validation=np.sort(validation), test=np.sort(test))


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
) -> tuple[Any, dict[str, list[float]]]:
    """The research script's training, with its early stopping; returns the model and its history."""
    keras = import_keras()
    keras.utils.set_random_seed(settings.seed)
    model = build_head_model(x_train.shape[1], learning_rate=settings.learning_rate)
    stopper = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=settings.patience, restore_best_weights=True
    )
    history = model.fit(
        x_train,
        y_train.astype(np.float32),
        validation_data=(x_validation, y_validation.astype(np.float32)),
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        class_weight=balanced_class_weights(y_train),
        callbacks=[stopper],
        verbose=0,
    )
    return model, {name: [float(value) for value in values] for name, values in history.history.items()}


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
