"""What training shows while it runs and in its report: epoch progress on any stream, a readable
confusion matrix, the best epoch marked on the learning curves (issue 19)."""

from __future__ import annotations

import io
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from model.progress import Progress
from model.report import draw_confusion, draw_learning_curves, text_colour_on
from model.training import FitSettings, best_epoch, fit_head


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _features(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    features = rng.normal(size=(n, 16)).astype(np.float32) + labels[:, None].astype(np.float32)
    return features, labels


def test_a_fit_prints_epoch_lines_to_a_stream_that_is_not_a_terminal() -> None:
    x_train, y_train = _features(40, seed=1)
    x_validation, y_validation = _features(12, seed=2)
    stream = io.StringIO()
    settings = FitSettings(epochs=4, batch_size=8, patience=10, learning_rate=1e-3, seed=3)

    _, history = fit_head(x_train, y_train, x_validation, y_validation, settings=settings, stream=stream)

    lines = stream.getvalue().splitlines()
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/4", "2/4", "3/4", "4/4"]
    for line, loss, val_loss in zip(epoch_lines, history["loss"], history["val_loss"], strict=True):
        assert re.fullmatch(r"epoch \d/4 \(\d+ s\): loss \S+, val loss \S+, acc \S+, val acc \S+", line)
        assert f"loss {loss:.4f}, val loss {val_loss:.4f}" in line
    assert "\r" not in stream.getvalue()  # plain lines, no bar redrawn in place
    assert lines[-1] == (
        f"fit: ran all 4 epochs; kept epoch {best_epoch(history)} (val loss {min(history['val_loss']):.4f})"
    )


def test_a_fit_without_progress_prints_nothing() -> None:
    x, y = _features(20, seed=1)
    stream = io.StringIO()
    settings = FitSettings(epochs=2, batch_size=8, patience=10, learning_rate=1e-3, seed=3)
    fit_head(x, y, x, y, settings=settings, progress=False, stream=stream)
    assert stream.getvalue() == ""


def test_plain_lines_come_every_nth_step_and_at_the_end() -> None:
    stream = io.StringIO()
    progress = Progress(total=200, desc="epoch", stream=stream)  # every 10th by default
    for epoch in range(37):  # early stopping at 37
        progress.advance(note=f"loss {epoch}")
    progress.close(note="fit: stopped early")
    lines = stream.getvalue().splitlines()
    assert [line.split()[1] for line in lines[:-1]] == ["10/200", "20/200", "30/200", "37/200"]
    assert lines[-2].endswith(": loss 36") and lines[-1] == "fit: stopped early"


def test_a_terminal_gets_a_bar() -> None:
    stream = Terminal()
    progress = Progress(total=3, desc="features", unit="img", stream=stream)
    for _ in range(3):
        progress.advance()
    progress.close()
    assert "\r" in stream.getvalue() and "3/3" in stream.getvalue()
    assert not re.search(r"^features 1/3 img", stream.getvalue(), re.MULTILINE)


@pytest.mark.parametrize(
    ("background", "expected"),
    [
        pytest.param((0.03, 0.19, 0.42, 1.0), "white", id="darkest_blue"),
        pytest.param((0.0, 0.0, 0.0), "white", id="black"),
        pytest.param((0.5, 0.0, 0.0), "white", id="dark_red"),
        pytest.param((0.97, 0.98, 1.0, 1.0), "black", id="lightest_blue"),
        pytest.param((1.0, 1.0, 1.0), "black", id="white"),
        pytest.param((0.42, 0.68, 0.84, 1.0), "black", id="mid_blue"),
    ],
)
def test_the_text_colour_contrasts_with_the_cell(background: tuple[float, ...], expected: str) -> None:
    assert text_colour_on(background) == expected


def test_confusion_counts_are_white_on_dark_cells_and_black_on_light_ones() -> None:
    figure, axis = plt.subplots()
    try:
        draw_confusion(axis, [[50, 2], [0, 45]], title="v1")
        colours = {text.get_text(): matplotlib.colors.to_hex(text.get_color()) for text in axis.texts}
    finally:
        plt.close(figure)
    assert colours == {"50": "#ffffff", "45": "#ffffff", "2": "#000000", "0": "#000000"}


def test_the_learning_curves_mark_the_best_epoch() -> None:
    history = {
        "loss": [0.7, 0.5, 0.4, 0.35, 0.3],
        "val_loss": [0.69, 0.55, 0.52, 0.56, 0.6],
        "accuracy": [0.5, 0.7, 0.8, 0.85, 0.9],
        "val_accuracy": [0.5, 0.7, 0.75, 0.74, 0.72],
    }
    figure, axes = plt.subplots(1, 2)
    try:
        draw_learning_curves(axes, history)
        for axis in axes:
            markers = [line for line in axis.get_lines() if line.get_label() == "best epoch (3)"]
            assert len(markers) == 1
            assert list(markers[0].get_xdata()) == [3, 3]  # vertical: the same x top to bottom
            assert "best epoch (3)" in [text.get_text() for text in axis.get_legend().get_texts()]
    finally:
        plt.close(figure)


def test_no_validation_loss_no_marker() -> None:
    figure, axes = plt.subplots(1, 2)
    try:
        draw_learning_curves(axes, {"loss": [0.7, 0.5], "accuracy": [0.5, 0.6]})
        assert not [line for line in axes[0].get_lines() if "best epoch" in str(line.get_label())]
    finally:
        plt.close(figure)
