"""Turning a labelled folder into a feature matrix, through the daemon's decoder and CLIP path."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from model.clip_features import ClipFeatureExtractor
from model.dataset import LabelledImage
from model.feature_cache import FeatureCache
from model.images import UndecodableImage, decode_pixels
from model.labels import LABEL_ORDER, Label

logger = logging.getLogger(__name__)


@dataclass
class ExtractedFeatures:
    features: np.ndarray  # (n, feature_size) float32, L2-normalised
    labels: np.ndarray  # (n,) 1 for LABEL_ORDER[1], 0 for LABEL_ORDER[0]
    items: list[LabelledImage]
    content_hashes: list[str]
    skipped: dict[str, str] = field(default_factory=dict)  # image name → reason
    cache_hits: int = 0
    extracted: int = 0
    seconds: float = 0.0

    def count(self, label: Label) -> int:
        return int(np.sum(self.labels == LABEL_ORDER.index(label)))


def extract_labelled(
    images: list[LabelledImage],
    *,
    extractor: ClipFeatureExtractor,
    cache: FeatureCache | None,
    batch_size: int,
    max_pixels: int,
    progress: bool = True,
) -> ExtractedFeatures:
    """Features for every readable image; unreadable ones are skipped with their reason."""
    started = time.perf_counter()
    rows: dict[int, np.ndarray] = {}
    hashes: dict[int, str] = {}
    skipped: dict[str, str] = {}
    pending: list[tuple[int, object]] = []
    hits = extracted = 0

    def flush() -> None:
        nonlocal extracted
        if not pending:
            return
        features = extractor.image_features([image for _, image in pending])  # type: ignore[misc]
        for (index, _), row in zip(pending, features, strict=True):
            rows[index] = row
            if cache is not None:
                cache.put(hashes[index], row)
        extracted += len(pending)
        pending.clear()

    for index, item in enumerate(tqdm(images, desc="features", unit="img", disable=not progress)):
        try:
            data = item.path.read_bytes()
        except OSError as error:
            skipped[item.name] = f"cannot read: {error.strerror or error}"
            continue
        hashes[index] = hashlib.sha256(data).hexdigest()
        cached = cache.get(hashes[index]) if cache is not None else None
        if cached is not None:
            rows[index] = cached
            hits += 1
            continue
        try:
            pending.append((index, decode_pixels(data, max_pixels=max_pixels)))
        except UndecodableImage as error:
            skipped[item.name] = str(error)
            continue
        if len(pending) >= batch_size:
            flush()
    flush()

    kept = sorted(rows)
    for name, reason in skipped.items():
        logger.warning("skipped %s: %s", name, reason)
    feature_size = extractor.feature_size
    return ExtractedFeatures(
        features=np.stack([rows[i] for i in kept]).astype(np.float32)
        if kept
        else np.zeros((0, feature_size), np.float32),
        labels=np.array([LABEL_ORDER.index(images[i].label) for i in kept], dtype=np.int64),
        items=[images[i] for i in kept],
        content_hashes=[hashes[i] for i in kept],
        skipped=skipped,
        cache_hits=hits,
        extracted=extracted,
        seconds=time.perf_counter() - started,
    )
