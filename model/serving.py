"""Choosing the head the daemon serves: the registry's current head, else zero-shot CLIP."""

from __future__ import annotations

import logging
from pathlib import Path

from model.clip_features import PREPROCESSING_VERSION, ClipFeatureExtractor
from model.heads import Head, ZeroShotHead
from model.keras_head import KerasHead
from model.labels import LABEL_ORDER, Label
from model.registry import HEAD_FILE, HeadMetadata, RegistryError, current_version, version_dir

logger = logging.getLogger(__name__)


def zero_shot_version(clip_source: str) -> str:
    return f"zero-shot:{clip_source}"


def load_serving_head(registry: Path, *, clip: ClipFeatureExtractor, prompts: dict[Label, list[str]]) -> Head:
    version = current_version(registry)
    if version is None:
        logger.info("no trained head in %s: classifying zero-shot with CLIP prompts", registry)
        return ZeroShotHead.from_prompts(
            {label: clip.text_features(prompts[label]) for label in LABEL_ORDER},
            logit_scale=clip.logit_scale,
            version=zero_shot_version(clip.source),
        )
    folder = version_dir(registry, version)
    metadata = HeadMetadata.read(folder)
    check_compatible(metadata, clip=clip)
    head = KerasHead.load(folder / HEAD_FILE, threshold=metadata.threshold, version=metadata.version)
    logger.info("serving head %s from %s (threshold %.3f)", metadata.version, folder, metadata.threshold)
    return head


def check_compatible(metadata: HeadMetadata, *, clip: ClipFeatureExtractor) -> None:
    """Refuse a head trained on features other than the ones this CLIP produces."""
    problems = []
    if metadata.clip_model != clip.source:
        problems.append(f"it was trained on CLIP {metadata.clip_model!r}, the daemon runs {clip.source!r}")
    if metadata.preprocessing_version != PREPROCESSING_VERSION:
        problems.append(
            f"its preprocessing version is {metadata.preprocessing_version!r}, "
            f"the daemon's is {PREPROCESSING_VERSION!r}"
        )
    if metadata.feature_size != clip.feature_size:
        problems.append(f"it expects {metadata.feature_size} features, CLIP gives {clip.feature_size}")
    if tuple(metadata.label_order) != tuple(str(label) for label in LABEL_ORDER):
        problems.append(
            f"its label order {list(metadata.label_order)} is not {[str(label) for label in LABEL_ORDER]}"
        )
    if problems:
        raise RegistryError(f"head {metadata.version} refused: " + "; ".join(problems))
