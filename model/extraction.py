"""Turning a labelled folder into a feature matrix, through the daemon's decoder and CLIP path."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from model.clip_features import PREPROCESSING_VERSION, ClipFeatureExtractor
from model.dataset import LabelledImage
from model.feature_cache import FeatureCache
from model.images import UndecodableImage, decode_pixels, read_checked
from model.labels import LABEL_ORDER, Label
from model.progress import Progress

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
    max_file_bytes: int,
    progress: bool = True,
) -> ExtractedFeatures:
    """Features for every image the daemon would classify; the rest (those it would fail for
    their bytes alone, under the same inbox.max_pixels and inbox.max_file_bytes, and unreadable
    ones) are skipped with the daemon's reason."""
    started = time.perf_counter()
    run = _Extraction(extractor, cache)
    bar = Progress(total=len(images), desc="features", unit="img") if progress else None
    for index, item in enumerate(images):
        run.add(index, item, max_pixels=max_pixels, max_file_bytes=max_file_bytes)
        if len(run.pending) >= batch_size:
            run.flush()
        if bar is not None:
            bar.advance()
    run.flush()
    if bar is not None:
        bar.close()
    for name, reason in run.skipped.items():
        logger.warning("skipped %s: %s", name, reason)
    kept = sorted(run.rows)
    return ExtractedFeatures(
        features=np.stack([run.rows[i] for i in kept]).astype(np.float32)
        if kept
        else np.zeros((0, extractor.feature_size), np.float32),
        labels=np.array([LABEL_ORDER.index(images[i].label) for i in kept], dtype=np.int64),
        items=[images[i] for i in kept],
        content_hashes=[run.hashes[i] for i in kept],
        skipped=run.skipped,
        cache_hits=run.hits,
        extracted=run.extracted,
        seconds=time.perf_counter() - started,
    )


def distinct_images(extracted: ExtractedFeatures) -> ExtractedFeatures:
    """`extracted` with each picture once: a copy of an image (same content hash) is left out, so
    no picture lands in two splits (a copy in the test split of one trained on would be scored as
    if it were unseen), and a picture under both labels is left out altogether (it would teach and
    test both answers). Each one left out is listed in `skipped` with the reason."""
    first: dict[tuple[str, int], int] = {}  # (content hash, label) → its first image
    for index, content_hash in enumerate(extracted.content_hashes):
        first.setdefault((content_hash, int(extracted.labels[index])), index)
    skipped = dict(extracted.skipped)
    kept = []
    for index, content_hash in enumerate(extracted.content_hashes):
        label = int(extracted.labels[index])
        name = extracted.items[index].name
        other_label = first.get((content_hash, 1 - label))
        if other_label is not None:
            skipped[name] = f"the same image is also labelled {extracted.items[other_label].name}"
        elif first[(content_hash, label)] != index:
            skipped[name] = f"duplicate of {extracted.items[first[(content_hash, label)]].name}"
        else:
            kept.append(index)
    if len(kept) == len(extracted.items):
        return extracted
    for name in sorted(set(skipped) - set(extracted.skipped)):
        logger.warning("left out %s: %s", name, skipped[name])
    return replace(
        extracted,
        features=extracted.features[kept],
        labels=extracted.labels[kept],
        items=[extracted.items[index] for index in kept],
        content_hashes=[extracted.content_hashes[index] for index in kept],
        skipped=skipped,
    )


class _Extraction:
    """Images in, feature rows out: from the cache by content hash, or through CLIP in batches."""

    def __init__(self, extractor: ClipFeatureExtractor, cache: FeatureCache | None) -> None:
        self._extractor = extractor
        self._cache = cache
        self.rows: dict[int, np.ndarray] = {}
        self.hashes: dict[int, str] = {}
        self.skipped: dict[str, str] = {}  # image name → reason
        self.pending: list[tuple[int, np.ndarray]] = []
        self.hits = self.extracted = 0

    def add(self, index: int, item: LabelledImage, *, max_pixels: int, max_file_bytes: int) -> None:
        try:
            # Refused as the daemon refuses it, before the cache: a feature cached by an earlier
            # version, or under a larger inbox.max_pixels, is of a frame the daemon now fails.
            data = read_checked(item.path, max_pixels=max_pixels, max_file_bytes=max_file_bytes)
        except OSError as error:
            self.skipped[item.name] = f"cannot read: {error.strerror or error}"
            return
        except UndecodableImage as error:
            self.skipped[item.name] = str(error)
            return
        self.hashes[index] = hashlib.sha256(data).hexdigest()
        cached = self._cache.get(self.hashes[index]) if self._cache is not None else None
        if cached is not None:
            self.rows[index] = cached
            self.hits += 1
            return
        try:
            self.pending.append((index, decode_pixels(data, max_pixels=max_pixels)))
        except UndecodableImage as error:
            self.skipped[item.name] = str(error)

    def flush(self) -> None:
        if not self.pending:
            return
        features = self._extractor.image_features([image for _, image in self.pending])
        for (index, _), row in zip(self.pending, features, strict=True):
            self.rows[index] = row
            if self._cache is not None:
                self._cache.put(self.hashes[index], row)
        self.extracted += len(self.pending)
        self.pending.clear()


def extract_cached(
    images: list[LabelledImage],
    *,
    extractor: ClipFeatureExtractor,
    cache_root: Path | None,
    batch_size: int,
    max_pixels: int,
    max_file_bytes: int,
    progress: bool = True,
) -> ExtractedFeatures:
    """extract_labelled through the feature cache under `cache_root` (none when None), in the
    namespace of this extractor's CLIP model, preprocessing and engine; logs what it took."""
    cache = None
    if cache_root is not None:
        cache = FeatureCache(
            cache_root,
            clip_model=extractor.identity.key,
            preprocessing_version=PREPROCESSING_VERSION,
            engine=extractor.runtime.tag,
        )
    extracted = extract_labelled(
        images,
        extractor=extractor,
        cache=cache,
        batch_size=batch_size,
        max_pixels=max_pixels,
        max_file_bytes=max_file_bytes,
        progress=progress,
    )
    logger.info(
        "%s features for %d images in %.1f s (%d extracted, %d cached, %d skipped)",
        extractor.runtime.tag,
        len(extracted.items),
        extracted.seconds,
        extracted.extracted,
        extracted.cache_hits,
        len(extracted.skipped),
    )
    return extracted
