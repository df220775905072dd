"""The research script's Keras MLP on CLIP features, run on Keras's torch backend.

TensorFlow beside torch's triton crashes the process on this platform, so Keras must use torch;
the backend is chosen through the environment before the first `import keras`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

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
    def __init__(
        self, model: Any, *, threshold: float, version: str, layers: DenseLayers | None = None
    ) -> None:
        self._model = model
        self.threshold = threshold
        self.version = version
        self._layers = layers

    @classmethod
    def load(cls, path: Path, *, threshold: float, version: str) -> KerasHead:
        keras = import_keras()
        model = keras.saving.load_model(path, compile=False)
        # A loaded head is never trained again: its weights can be read once.
        return cls(model, threshold=threshold, version=version, layers=DenseLayers.of(model))

    def positive_probability(self, features: np.ndarray) -> np.ndarray:
        if len(features) == 0:
            return np.zeros(0)
        if self._layers is not None:
            return self._layers.positive_probability(features)
        keras = import_keras()
        # A direct call skips model.predict's per-call setup and progress output.
        output = self._model(features.astype(np.float32), training=False)
        return np.asarray(keras.ops.convert_to_numpy(output), dtype=np.float64).reshape(-1)

    def predict(self, features: np.ndarray) -> list[Prediction]:
        return predictions_from_positive_probability(
            self.positive_probability(features), threshold=self.threshold
        )


class DenseLayers:
    """A head made only of Dense and Dropout layers (the researched one), run as numpy matrix
    products on its own weights: the same sums in float32, without Keras's few milliseconds of
    machinery a call (on a GPU's daemon, 2.4 ms a batch of the Python that every stage waits for).
    Inference only: Dropout does nothing there."""

    _ACTIVATIONS: ClassVar[dict[str, Callable[[np.ndarray], np.ndarray]]] = {
        "linear": lambda values: values,
        "relu": lambda values: np.maximum(values, 0.0),
        # tanh's form of the logistic function: no overflow for large negative sums.
        "sigmoid": lambda values: 0.5 * (1.0 + np.tanh(0.5 * values)),
    }

    def __init__(
        self, steps: list[tuple[np.ndarray, np.ndarray | None, Callable[[np.ndarray], np.ndarray]]]
    ) -> None:
        self._steps = steps

    @classmethod
    def of(cls, model: Any) -> DenseLayers | None:
        """The model's layers as matrix products; None when it has any other kind of layer, an
        activation given as a layer or object, or computes in anything but float32 (a mixed
        precision policy keeps float32 weights but sums in float16)."""
        keras = import_keras()
        layers = getattr(model, "layers", None)
        if not layers:
            return None
        steps = []
        for layer in layers:
            if isinstance(layer, keras.layers.Dropout):
                continue
            if not isinstance(layer, keras.layers.Dense) or layer.compute_dtype != "float32":
                return None
            named = layer.get_config().get("activation")
            activation = cls._ACTIVATIONS.get(named) if isinstance(named, str) else None
            if activation is None or layer.kernel.dtype != "float32":
                return None
            kernel = np.asarray(keras.ops.convert_to_numpy(layer.kernel), dtype=np.float32)
            bias = (
                np.asarray(keras.ops.convert_to_numpy(layer.bias), dtype=np.float32)
                if layer.use_bias
                else None
            )
            steps.append((kernel, bias, activation))
        return cls(steps) if steps else None  # Dropout alone: not a head

    def positive_probability(self, features: np.ndarray) -> np.ndarray:
        values = features.astype(np.float32)
        for kernel, bias, activation in self._steps:
            values = values @ kernel
            if bias is not None:
                values += bias
            values = activation(values)
        return values.astype(np.float64).reshape(-1)
