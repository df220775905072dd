"""Loading heads: a registered version, zero-shot CLIP, or whatever the registry currently serves."""

from __future__ import annotations

import logging
from pathlib import Path

from model.clip_features import PREPROCESSING_VERSION, ClipFeatureExtractor
from model.heads import Head, ZeroShotHead
from model.identity import ClipIdentity, identify_clip, same_model
from model.keras_head import KerasBackendError, KerasHead
from model.labels import LABEL_ORDER, Label
from model.registry import HEAD_FILE, HeadMetadata, RegistryError, current_version, version_dir
from model.registry_files import archive_problem

logger = logging.getLogger(__name__)

ZERO_SHOT_PREFIX = "zero-shot:"


def zero_shot_version(clip_name: str) -> str:
    """`zero-shot:<name>`: the CLIP model's name (folder name or Hub id), never a path."""
    return f"{ZERO_SHOT_PREFIX}{clip_name}"


def build_zero_shot_head(clip: ClipFeatureExtractor, prompts: dict[Label, list[str]]) -> ZeroShotHead:
    return ZeroShotHead.from_prompts(
        {label: clip.text_features(prompts[label]) for label in LABEL_ORDER},
        logit_scale=clip.logit_scale,
        version=zero_shot_version(clip.identity.name),
    )


def load_registered_head(registry: Path, version: str, *, clip: ClipFeatureExtractor) -> KerasHead:
    """A registered head version, refused unless it was trained on this CLIP's features."""
    folder = version_dir(registry, version)
    metadata = HeadMetadata.read(folder)
    check_compatible(metadata, clip=clip)
    return read_head_file(folder, metadata)


def read_head_file(folder: Path, metadata: HeadMetadata) -> KerasHead:
    """The Keras head of a registered version's folder; RegistryError when it cannot be loaded."""
    try:
        return KerasHead.load(folder / HEAD_FILE, threshold=metadata.threshold, version=metadata.version)
    except KerasBackendError:
        raise
    # Keras reports a bad file with any type (TypeError for a layer class it does not know,
    # KeyError, ValueError): each means this head cannot be served, never that the daemon stops.
    except Exception as error:  # noqa: BLE001
        # Keras calls any file it cannot open as a zip "File not found": the file is there (not a
        # zip, or one this user may not read).
        reason = archive_problem(folder / HEAD_FILE) or error
        raise RegistryError(f"{folder / HEAD_FILE}: cannot load head {metadata.version}: {reason}") from None


def load_head(
    registry: Path, version: str | None, *, clip: ClipFeatureExtractor, prompts: dict[Label, list[str]]
) -> Head:
    """`version` from the registry; `zero-shot` (or any `zero-shot:...`) for CLIP's zero-shot head;
    None for whatever the registry currently serves."""
    if version is None:
        return load_serving_head(registry, clip=clip, prompts=prompts)
    if version == "zero-shot" or version.startswith(ZERO_SHOT_PREFIX):
        return build_zero_shot_head(clip, prompts)
    return load_registered_head(registry, version, clip=clip)


def load_serving_head(registry: Path, *, clip: ClipFeatureExtractor, prompts: dict[Label, list[str]]) -> Head:
    version = current_version(registry)
    if version is None:
        logger.info("no trained head in %s: classifying zero-shot with CLIP prompts", registry)
        return build_zero_shot_head(clip, prompts)
    head = load_registered_head(registry, version, clip=clip)
    logger.info("serving head %s from %s (threshold %.3f)", head.version, registry, head.threshold)
    return head


def metadata_problems(metadata: HeadMetadata, *, clip: ClipIdentity) -> list[str]:
    """What makes a head unusable with the CLIP model `clip`, judged from its metadata alone.

    The model is compared by content (model.identity), so a moved or copied CLIP folder keeps
    its heads."""
    problems = []
    trained_on = metadata.clip
    if not same_model(trained_on, clip):
        problems.append(f"it was trained on CLIP {trained_on.describe()}, the daemon runs {clip.describe()}")
    if metadata.preprocessing_version != PREPROCESSING_VERSION:
        problems.append(
            f"its preprocessing version is {metadata.preprocessing_version!r}, "
            f"the daemon's is {PREPROCESSING_VERSION!r}"
        )
    if tuple(metadata.label_order) != tuple(str(label) for label in LABEL_ORDER):
        expected = [str(label) for label in LABEL_ORDER]
        problems.append(f"its label order {list(metadata.label_order)} is not {expected}")
    return problems


def refuse_if_incompatible(metadata: HeadMetadata, *, clip_source: str) -> None:
    """Refuse a head that does not fit `model.clip` (a folder or a Hub id), without loading CLIP."""
    problems = metadata_problems(metadata, clip=identify_clip(clip_source))
    if problems:
        raise RegistryError(f"head {metadata.version} refused: " + "; ".join(problems))


def check_compatible(metadata: HeadMetadata, *, clip: ClipFeatureExtractor) -> None:
    """Refuse a head trained on features other than the ones this CLIP produces."""
    problems = metadata_problems(metadata, clip=clip.identity)
    if metadata.feature_size != clip.feature_size:
        problems.append(f"it expects {metadata.feature_size} features, CLIP gives {clip.feature_size}")
    if problems:
        raise RegistryError(f"head {metadata.version} refused: " + "; ".join(problems))
