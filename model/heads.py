"""Heads turn CLIP features into a label and its probability.

Two kinds serve: the trained Keras MLP from the registry, and zero-shot CLIP (text prompts) for a
fresh install that has no trained head yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from model.labels import LABEL_ORDER, Label


@dataclass(frozen=True)
class Prediction:
    label: Label
    # The head's probability of `label` (not of a fixed class), so it reads as confidence.
    probability: float


class Head(Protocol):
    version: str
    threshold: float

    def positive_probability(self, features: np.ndarray) -> np.ndarray:
        """Probability of LABEL_ORDER[1] for each row of features."""
        ...

    def predict(self, features: np.ndarray) -> list[Prediction]: ...


def predictions_from_positive_probability(positive: np.ndarray, *, threshold: float) -> list[Prediction]:
    """Label each row by its probability of LABEL_ORDER[1] against the decision threshold."""
    negative_label, positive_label = LABEL_ORDER
    predictions = []
    for p in positive.reshape(-1).astype(float):
        if p >= threshold:
            predictions.append(Prediction(positive_label, p))
        else:
            predictions.append(Prediction(negative_label, 1.0 - p))
    return predictions


class ZeroShotHead:
    """CLIP's own zero-shot classifier: cosine similarity to the mean embedding of each class's prompts."""

    def __init__(self, *, class_embeddings: np.ndarray, logit_scale: float, version: str) -> None:
        # Rows follow LABEL_ORDER.
        self._class_embeddings = class_embeddings
        self._logit_scale = logit_scale
        self.version = version
        self.threshold = 0.5

    @classmethod
    def from_prompts(
        cls,
        prompt_features: dict[Label, np.ndarray],
        *,
        logit_scale: float,
        version: str,
    ) -> ZeroShotHead:
        rows = []
        for label in LABEL_ORDER:
            mean = prompt_features[label].mean(axis=0)
            rows.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
        return cls(class_embeddings=np.stack(rows), logit_scale=logit_scale, version=version)

    def positive_probability(self, features: np.ndarray) -> np.ndarray:
        logits = self._logit_scale * features @ self._class_embeddings.T
        # Softmax over two classes is the sigmoid of the logit difference.
        probability: np.ndarray = 1.0 / (1.0 + np.exp(-(logits[:, 1] - logits[:, 0])))
        return probability

    def predict(self, features: np.ndarray) -> list[Prediction]:
        return predictions_from_positive_probability(self.positive_probability(features), threshold=0.5)
