"""Metrics of a classifier on a labelled split, in one shape for heads and baselines alike."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from model.labels import LABEL_ORDER

PromotePolicy = Literal["auto", "never", "force"]
ZERO_SHOT = "zero-shot"


def classification_metrics(y_true: np.ndarray, positive: np.ndarray, *, threshold: float) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1, ROC AUC, log loss and the confusion matrix."""
    predicted = (positive >= threshold).astype(int)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, predicted, labels=[0, 1], zero_division=0
    )
    both_classes = len(np.unique(y_true)) == 2
    clipped = np.clip(positive, 1e-7, 1 - 1e-7)
    return {
        "n": int(len(y_true)),
        "threshold": float(threshold),
        "accuracy": float(accuracy_score(y_true, predicted)),
        "roc_auc": float(roc_auc_score(y_true, positive)) if both_classes else None,
        "log_loss": float(log_loss(y_true, clipped, labels=[0, 1])),
        "per_class": {
            str(label): {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(LABEL_ORDER)
        },
        # Rows are the true class, columns the predicted one, both in LABEL_ORDER.
        "confusion_matrix": confusion_matrix(y_true, predicted, labels=[0, 1]).tolist(),
    }


def roc_points(y_true: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    false_positive, true_positive, _ = roc_curve(y_true, positive)
    return false_positive, true_positive


def beats(candidate: dict[str, Any], incumbent: dict[str, Any]) -> bool:
    """Higher accuracy wins; on equal accuracy, the lower log loss."""
    if candidate["accuracy"] != incumbent["accuracy"]:
        return bool(candidate["accuracy"] > incumbent["accuracy"])
    return bool(candidate["log_loss"] < incumbent["log_loss"])


def decide_promotion(
    policy: PromotePolicy, version: str, results: dict[str, dict[str, Any]], current: str | None
) -> tuple[bool, str]:
    """Whether the new head `version` is promoted, and why: under `auto`, only if it beats
    zero-shot and the current head on the test split."""
    if policy == "never":
        return False, "not promoted (--promote never)"
    if policy == "force":
        return True, "promoted (--promote force)"
    new = results[version]
    rivals = [ZERO_SHOT] + ([current] if current in results else [])
    lost = [name for name in rivals if not beats(new, results[name])]
    if lost:
        against = ", ".join(f"{name} {results[name]['accuracy']:.3f}" for name in lost)
        return (
            False,
            f"not promoted: accuracy {new['accuracy']:.3f} does not beat {against}; kept the current head",
        )
    beaten = ", ".join(f"{name} {results[name]['accuracy']:.3f}" for name in rivals)
    return True, f"promoted: accuracy {new['accuracy']:.3f} beats {beaten}"
