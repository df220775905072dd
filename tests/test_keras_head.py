"""A loaded head runs as matrix products on its own weights: the same probabilities as Keras."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from model.keras_head import DenseLayers, KerasHead, build_head_model, import_keras

FEATURES = 16


def _saved_head(folder: Path, *, seed: int) -> Path:
    keras = import_keras()
    keras.utils.set_random_seed(seed)
    model = build_head_model(FEATURES)
    # Trained-looking weights: large enough that the sigmoid saturates for some inputs.
    for layer in model.layers:
        layer.set_weights([weights * 4 for weights in layer.get_weights()])
    path = folder / "head.keras"
    model.save(path)
    return path


@settings(max_examples=25, deadline=None)
@example(features=np.array([[28.0] * 8 + [-9.0] + [28.0] * 7], dtype=np.float32))  # CI's 1.27e-5
@given(
    features=arrays(
        np.float32, st.tuples(st.integers(1, 40), st.just(FEATURES)), elements=st.floats(-50, 50, width=32)
    )
)
def test_a_loaded_head_gives_what_keras_gives(tmp_path_factory: object, features: np.ndarray) -> None:
    folder = tmp_path_factory.mktemp("head")  # type: ignore[attr-defined]
    path = _saved_head(folder, seed=7)
    loaded = KerasHead.load(path, threshold=0.5, version="v1")
    keras_only = KerasHead(import_keras().saving.load_model(path, compile=False), threshold=0.5, version="v1")

    fast = loaded.positive_probability(features)
    reference = keras_only.positive_probability(features)

    assert fast.shape == reference.shape == (len(features),)
    # Both sum in float32, in different orders: with inputs up to ±50 and weights ×4 the logit
    # is summed from terms in the hundreds, so float32 (eps 1.2e-7) leaves about 1e-5 in the
    # probability (CI met 1.27e-5 at 0.294 with features of 28: this bound was 2e-6).
    np.testing.assert_allclose(fast, reference, atol=5e-5, rtol=1e-5)
    assert [p.label for p in loaded.predict(features)] == [p.label for p in keras_only.predict(features)] or (
        np.abs(reference - 0.5).min() < 1e-5  # a tie at the threshold may fall either way
    )


def test_the_researched_head_is_read_as_matrix_products_and_others_are_left_to_keras(tmp_path: Path) -> None:
    keras = import_keras()
    assert DenseLayers.of(keras.saving.load_model(_saved_head(tmp_path, seed=1), compile=False)) is not None

    other = keras.Sequential(
        [keras.Input(shape=(FEATURES,)), keras.layers.BatchNormalization(), keras.layers.Dense(1, "sigmoid")]
    )
    assert DenseLayers.of(other) is None
    # Keras serves these; matrix products in float32 would not give what it gives.
    leaky = keras.Sequential(
        [keras.Input(shape=(FEATURES,)), keras.layers.Dense(8, activation=keras.layers.LeakyReLU(0.1))]
    )
    mixed = keras.Sequential([keras.Input(shape=(FEATURES,)), keras.layers.Dense(1, dtype="mixed_float16")])
    assert DenseLayers.of(leaky) is None and DenseLayers.of(mixed) is None
    path = tmp_path / "other.keras"
    other.save(path)
    head = KerasHead.load(path, threshold=0.5, version="v2")
    features = np.random.default_rng(3).normal(size=(5, FEATURES)).astype(np.float32)
    expected = keras.ops.convert_to_numpy(other(features, training=False)).reshape(-1)
    np.testing.assert_allclose(head.positive_probability(features), expected, atol=1e-6)
