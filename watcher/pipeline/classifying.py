"""Stage two: decoded frames through CLIP and the head (Decoded → Classified).

A frame that breaks the model (out of memory, say) fails alone: the batch is split in halves
until the frame at fault is found, and every other frame is classified.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import torch

from model.clip_features import PREPROCESSING_VERSION, ClipFeatureExtractor
from model.heads import Head, Prediction
from watcher.pipeline.stages import Classification, Classified, Decoded
from watcher.store.embeddings import embedding_model_id, pack_embeddings
from watcher.wording import plural

logger = logging.getLogger(__name__)


class Classifier:
    def __init__(self, extractor: ClipFeatureExtractor, *, store_embeddings: bool) -> None:
        self._extractor = extractor
        # Batches may run at once (see watcher.pipeline.lanes); a Keras model is not documented as
        # safe to call from two threads, and the head is quick next to CLIP.
        self._head_lock = threading.Lock()
        self._embedding_model = (
            embedding_model_id(extractor.identity.key, PREPROCESSING_VERSION, extractor.runtime.tag)
            if store_embeddings
            else None
        )

    def classify(self, decoded: list[Decoded], *, head: Head) -> list[Classified]:
        """One Classified per Decoded, in order; frames that failed decoding pass through failed."""
        outcome: dict[str, Classified] = {}
        self._classify([item for item in decoded if item.pixels is not None], head, outcome)
        return [
            outcome.get(item.frame.key) or Classified(item.frame, item.facts, None, item.error)
            for item in decoded
        ]

    def _classify(self, decodable: list[Decoded], head: Head, outcome: dict[str, Classified]) -> None:
        if not decodable:
            return
        failure: str | None = None
        try:
            features = self._extractor.image_features([item.pixels for item in decodable])  # type: ignore[misc]  # decodable: pixels set
            with self._head_lock:
                predictions = head.predict(features)
        except torch.AcceleratorError:
            # The device itself failed (its context is lost): every later frame would fail too.
            # The daemon stops with the batch still claimed; restarted, it takes the frames again.
            raise
        except Exception as error:  # noqa: BLE001 - one bad frame must not fail the batch
            failure = f"{type(error).__name__}: {error}"
            if len(decodable) == 1:
                logger.exception("model failed on frame %s", decodable[0].frame.relative)
        # Split (or give up) only here, the error gone: its traceback holds the failed pass's
        # tensors, which on a GPU out of memory the halves need.
        if failure is not None:
            if len(decodable) == 1:
                item = decodable[0]
                outcome[item.frame.key] = Classified(item.frame, item.facts, None, f"model error: {failure}")
                return
            logger.warning(
                "model failed on %s (%s); splitting the batch", plural(len(decodable), "frame"), failure
            )
            middle = len(decodable) // 2
            self._classify(decodable[:middle], head, outcome)
            self._classify(decodable[middle:], head, outcome)
            return
        embeddings: Sequence[bytes | None] = (
            pack_embeddings(features) if self._embedding_model is not None else [None] * len(decodable)
        )
        for item, prediction, embedding in zip(decodable, predictions, embeddings, strict=True):
            outcome[item.frame.key] = Classified(
                item.frame, item.facts, self._classification(prediction, embedding, head)
            )
            logger.debug("frame %s: %s %.3f", item.frame.relative, prediction.label, prediction.probability)

    def _classification(self, prediction: Prediction, embedding: bytes | None, head: Head) -> Classification:
        return Classification(
            label=prediction.label,
            probability=prediction.probability,
            model_version=head.version,
            precision=self._extractor.runtime.precision,
            embedding=embedding,
            embedding_model=self._embedding_model,
        )
