"""The training report: comparison table, plots (PNG), `report.md` and `metrics.json`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from model.labels import LABEL_ORDER
from model.training import best_epoch

LEARNING_CURVES = "learning_curves.png"
ROC_CURVE = "roc_curve.png"
CONFUSION_MATRIX = "confusion_matrix.png"
REPORT = "report.md"
METRICS = "metrics.json"


def comparison_table(results: dict[str, dict[str, Any]]) -> str:
    """A Markdown table, one row per model, the same columns for all."""
    header = "| model | accuracy | ROC AUC | log loss | F1 female | F1 male | threshold |"
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|"]
    for name, metrics in results.items():
        auc = "n/a" if metrics["roc_auc"] is None else f"{metrics['roc_auc']:.3f}"
        f1 = [metrics["per_class"][str(label)]["f1"] for label in LABEL_ORDER]
        lines.append(
            f"| {name} | {metrics['accuracy']:.3f} | {auc} | {metrics['log_loss']:.3f} | "
            f"{f1[0]:.3f} | {f1[1]:.3f} | {metrics['threshold']:.3f} |"
        )
    return "\n".join(lines)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: the service has no display
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(history: dict[str, list[float]], path: Path) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    draw_learning_curves(axes, history)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def draw_learning_curves(axes: Any, history: dict[str, list[float]]) -> None:
    """Loss and accuracy per epoch, train and validation, on two Axes; a vertical line marks the
    best epoch (lowest validation loss: the weights early stopping kept)."""
    best = best_epoch(history)
    for axis, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + metric)
            if values:
                axis.plot(
                    range(1, len(values) + 1),
                    values,
                    style,
                    label=("validation " if prefix else "train ") + metric,
                )
        if best is not None:
            axis.axvline(best, color="tab:red", linestyle=":", label=f"best epoch ({best})")
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.legend()


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 5))
    for name, (false_positive, true_positive) in curves.items():
        axis.plot(false_positive, true_positive, label=name)
    axis.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    axis.set_xlabel(f"false positive rate ({LABEL_ORDER[1]})")
    axis.set_ylabel(f"true positive rate ({LABEL_ORDER[1]})")
    axis.set_title("ROC, test split")
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_confusion(matrix: list[list[int]], path: Path, *, title: str) -> None:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(4, 4))
    draw_confusion(axis, matrix, title=title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def draw_confusion(axis: Any, matrix: list[list[int]], *, title: str) -> None:
    """The 2×2 matrix as shaded cells, each count written in the colour that reads on its cell."""
    image = axis.imshow(np.array(matrix), cmap="Blues")
    names = [str(label) for label in LABEL_ORDER]
    axis.set_xticks([0, 1], names)
    axis.set_yticks([0, 1], names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    for row in range(2):
        for column in range(2):
            value = matrix[row][column]
            colour = text_colour_on(image.cmap(image.norm(value)))
            axis.text(column, row, str(value), ha="center", va="center", color=colour, fontsize=14)
    axis.set_title(title)


def text_colour_on(background: tuple[float, ...]) -> str:
    """`white` or `black`, whichever contrasts more with an RGB(A) background in 0..1 (WCAG 2's
    relative luminance and contrast ratio: white on dark cells, black on light ones)."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in background[:3]]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    against_white = 1.05 / (luminance + 0.05)
    against_black = (luminance + 0.05) / 0.05
    return "white" if against_white > against_black else "black"


def write_report(
    folder: Path,
    *,
    version: str,
    results: dict[str, dict[str, Any]],
    summary: dict[str, Any],
    skipped: dict[str, str],
    history: dict[str, list[float]],
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    engines: dict[str, dict[str, Any]],
) -> None:
    """Write the plots, `metrics.json` and `report.md` into `folder`."""
    plot_learning_curves(history, folder / LEARNING_CURVES)
    plot_roc(curves, folder / ROC_CURVE)
    plot_confusion(
        results[version]["confusion_matrix"], folder / CONFUSION_MATRIX, title=f"{version}, test split"
    )
    (folder / METRICS).write_text(
        json.dumps(
            {"summary": summary, "test": results, "engines": engines, "skipped": skipped},
            indent=2,
            sort_keys=True,
        )
        + "\n",
        encoding="utf-8",
    )
    lines = [
        f"# Head {version}",
        "",
        f"Trained on `{summary['data']}` ({summary['counts']}), "
        f"CLIP `{summary['clip_model']}` on {summary['engine']}, seed {summary['seed']}.",
        f"Split: {summary['split']}. Every figure below is on the test split, touched once.",
        "",
        comparison_table(results),
        "",
        f"Decision: {summary['decision']}",
        "",
        "## The new head on each engine",
        "",
        "The same test images through every engine that passed the fidelity gate on this machine "
        f"(trained and served on {summary['engine']}).",
        "",
        comparison_table(engines),
        "",
        f"Feature extraction: {summary['extraction_seconds']:.1f} s ({summary['extracted']} extracted, "
        f"{summary['cache_hits']} from the cache); fitting: {summary['fit_seconds']:.1f} s, "
        f"{summary['epochs_run']} epochs (best at {summary['best_epoch']}).",
        "",
        f"![learning curves]({LEARNING_CURVES})",
        f"![ROC curve]({ROC_CURVE})",
        f"![confusion matrix]({CONFUSION_MATRIX})",
        "",
    ]
    if skipped:
        lines += ["## Skipped images", "", "| image | reason |", "|---|---|"]
        lines += [f"| {name} | {reason} |" for name, reason in sorted(skipped.items())]
        lines.append("")
    # A file name that is not UTF-8 (bytes kept by os.fsdecode as surrogates) is written escaped.
    (folder / REPORT).write_text("\n".join(lines), encoding="utf-8", errors="backslashreplace")
