"""The research script's Keras MLP on CLIP features, run on Keras's torch backend.

TensorFlow beside torch's triton crashes the process on this platform, so Keras must use torch;
the backend is chosen through the environment before the first `import keras`.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from model.heads import Prediction, predictions_from_positive_probability


class KerasBackendError(Exception):
    """Keras was already imported with another backend in this process."""


def import_keras() -> ModuleType:
    """Import keras on the torch backend (the variable is read only at keras's first import)."""
    os.environ["KERAS_BACKEND"] = "torch"
    import keras

    if keras.backend.backend() != "torch":
        raise KerasBackendError(
            f"keras was imported with the {keras.backend.backend()!r} backend before cctv-gender "
            "could select 'torch'; unset KERAS_BACKEND or set it to 'torch'"
        )
    module: ModuleType = keras  # keras ships no type information: name what it is
    return module


def build_head_model(feature_size: int, *, learning_rate: float = 1e-3) -> Any:
    """Dense 128 relu → Dropout 0.3 → Dense 64 relu → Dropout 0.3 → Dense 1 sigmoid, as researched."""
    keras = import_keras()
    model = keras.Sequential(
        [
            keras.Input(shape=(feature_size,), name="clip_features"),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    return model


class KerasHead:
    def __init__(self, model: Any, *, threshold: float, version: str) -> None:
        self._model = model
        self.threshold = threshold
        self.version = version

    @classmethod
    def load(cls, path: Path, *, threshold: float, version: str) -> KerasHead:
        keras = import_keras()
        return cls(keras.saving.load_model(path, compile=False), threshold=threshold, version=version)

    def positive_probability(self, features: np.ndarray) -> np.ndarray:
        if len(features) == 0:
            return np.zeros(0)
        keras = import_keras()
        # A direct call skips model.predict's per-call setup and progress output.
        output = self._model(features.astype(np.float32), training=False)
        return np.asarray(keras.ops.convert_to_numpy(output), dtype=np.float64).reshape(-1)

    def predict(self, features: np.ndarray) -> list[Prediction]:
        return predictions_from_positive_probability(
            self.positive_probability(features), threshold=self.threshold
        )
