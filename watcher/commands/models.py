"""`cctv-gender train`, `evaluate` and `models list | promote | rollback`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from watcher.config import Config
from watcher.errors import StartupError

logger = logging.getLogger(__name__)


def _training_failure_types() -> tuple[type[Exception], ...]:
    from model.dataset import DatasetError
    from model.keras_head import KerasBackendError
    from model.registry import RegistryError

    return (DatasetError, RegistryError, KerasBackendError)


def run_train(config: Config, *, data: Path, promote: str, seed: int | None) -> int:
    from model.train_run import TrainingOptions, train
    from model.training import FitSettings, SplitFractions
    from watcher.pipeline.assembly import load_extractor

    settings = config.training
    options = TrainingOptions(
        data=data.resolve(),
        registry=config.registry_dir,
        feature_cache=config.feature_cache_dir,
        fractions=SplitFractions(validation=settings.validation_fraction, test=settings.test_fraction),
        fit=FitSettings(
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            patience=settings.patience,
            learning_rate=settings.learning_rate,
            seed=settings.seed if seed is None else seed,
        ),
        extract_batch_size=settings.extract_batch_size,
        max_pixels=config.inbox.max_pixels,
        promote=promote,  # type: ignore[arg-type]
        prompts=config.model.zero_shot.by_label(),
        progress=sys.stderr.isatty(),
    )
    extractor = load_extractor(config)
    try:
        outcome = train(options, extractor=extractor)
    except _training_failure_types() as error:
        raise StartupError(str(error)) from None
    print(f"head {outcome.version}: test split comparison")
    print(outcome.table())
    print()
    print(outcome.decision)
    print(
        f"feature extraction {outcome.extraction_seconds:.1f} s, fitting {outcome.fit_seconds:.1f} s; "
        f"{len(outcome.skipped)} images skipped"
    )
    print(f"report: {outcome.folder / 'report.md'}")
    return 0


def run_evaluate(config: Config, *, data: Path, version: str | None) -> int:
    from model.clip_features import PREPROCESSING_VERSION
    from model.dataset import scan_labelled_folder
    from model.evaluation import classification_metrics
    from model.extraction import extract_labelled
    from model.feature_cache import FeatureCache
    from model.report import comparison_table
    from model.serving import load_head
    from watcher.pipeline.assembly import load_extractor

    extractor = load_extractor(config)
    try:
        head = load_head(
            config.registry_dir, version, clip=extractor, prompts=config.model.zero_shot.by_label()
        )
        extracted = extract_labelled(
            scan_labelled_folder(data),
            extractor=extractor,
            cache=FeatureCache(
                config.feature_cache_dir,
                clip_model=extractor.source,
                preprocessing_version=PREPROCESSING_VERSION,
            ),
            batch_size=config.training.extract_batch_size,
            max_pixels=config.inbox.max_pixels,
            progress=sys.stderr.isatty(),
        )
    except _training_failure_types() as error:
        raise StartupError(str(error)) from None
    if len(extracted.items) == 0:
        raise StartupError(f"{data}: no readable images to evaluate on")
    metrics = classification_metrics(
        extracted.labels, head.positive_probability(extracted.features), threshold=head.threshold
    )
    print(f"{head.version} on {data} ({len(extracted.items)} images, {len(extracted.skipped)} skipped)")
    print(comparison_table({head.version: metrics}))
    matrix = metrics["confusion_matrix"]
    print(f"confusion matrix (rows true female/male, columns predicted): {matrix}")
    return 0


def run_models_list(config: Config) -> int:
    from model.registry import current_version, list_versions

    registry = config.registry_dir
    current = current_version(registry)
    versions = list_versions(registry)
    if not versions:
        print(f"no trained heads in {registry}; serving zero-shot CLIP")
        return 0
    print(f"{'':2}{'version':<20} {'created':<26} {'test accuracy':>13} {'threshold':>9}  clip")
    for metadata in versions:
        test = metadata.extra.get("metrics", {}).get("test", {})
        accuracy = f"{test['accuracy']:.3f}" if "accuracy" in test else "-"
        marker = "* " if metadata.version == current else "  "
        created = metadata.extra.get("created_at", "-")
        print(
            f"{marker}{metadata.version:<20} {created:<26} {accuracy:>13} "
            f"{metadata.threshold:>9.3f}  {metadata.clip_model}"
        )
    if current is None:
        print("(no current head: serving zero-shot CLIP)")
    return 0


def run_models_promote(config: Config, *, version: str) -> int:
    from model.registry import HeadMetadata, RegistryError, promote, version_dir
    from model.serving import refuse_if_incompatible

    try:
        metadata = HeadMetadata.read(version_dir(config.registry_dir, version))
        refuse_if_incompatible(metadata, clip_source=config.model.clip)
        promote(config.registry_dir, version)
    except RegistryError as error:
        raise StartupError(str(error)) from None
    print(f"current head is now {version}; a running daemon switches to it before its next batch")
    return 0


def run_models_rollback(config: Config) -> int:
    from model.registry import RegistryError, rollback

    try:
        version = rollback(config.registry_dir)
    except RegistryError as error:
        raise StartupError(str(error)) from None
    print(f"current head is now {version}" if version else "no head left: serving zero-shot CLIP")
    return 0
