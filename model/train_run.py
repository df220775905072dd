"""One training run: extract (cached), split, fit, evaluate against baselines, register, promote.

The test split is used once, at the end, for every model in the comparison.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from model.clip_features import ClipFeatureExtractor
from model.dataset import LabelledImage, require_enough, scan_labelled_folder
from model.evaluation import ZERO_SHOT, PromotePolicy, classification_metrics, decide_promotion
from model.extraction import ExtractedFeatures, distinct_images, extract_cached
from model.keras_head import KerasHead
from model.labels import LABEL_ORDER, Label
from model.registry import (
    RegistryError,
    current_version,
    learnt_images,
    new_version_name,
    promote,
)
from model.registry_lock import registry_lock
from model.report import comparison_table
from model.serving import build_zero_shot_head, load_registered_head
from model.train_record import register_run
from model.training import FitSettings, Split, SplitFractions, choose_threshold, fit_head, stratified_split

LOGISTIC = "logistic regression"


@dataclass(frozen=True)
class TrainingOptions:
    data: Path
    registry: Path
    feature_cache: Path | None
    fractions: SplitFractions
    fit: FitSettings
    extract_batch_size: int
    max_pixels: int
    max_file_bytes: int
    promote: PromotePolicy
    prompts: dict[Label, list[str]]
    progress: bool = True


@dataclass(frozen=True)
class TrainingOutcome:
    version: str
    folder: Path
    results: dict[str, dict[str, Any]]
    promoted: bool
    decision: str
    extraction_seconds: float
    fit_seconds: float
    skipped: dict[str, str]
    # The new head on the test split, per engine that passed the gate (the serving one first).
    engines: dict[str, dict[str, Any]]

    def table(self) -> str:
        return comparison_table(self.results)


@dataclass(frozen=True)
class _Fitted:
    version: str
    model: Any  # the Keras model, saved into the registry
    head: KerasHead
    history: dict[str, list[float]]
    split: Split
    seconds: float


@dataclass(frozen=True)
class _Comparison:
    probabilities: dict[str, tuple[np.ndarray, float]]  # name → (probabilities of `scored`, threshold)
    results: dict[str, dict[str, Any]]
    current: str | None
    note: str  # why the current head is missing from the comparison, or on what it was scored
    scored: np.ndarray  # the test split's images every model was scored on (indices)
    current_unknown: bool = False  # the registry's pointer could not be read


def train(
    options: TrainingOptions,
    *,
    extractor: ClipFeatureExtractor,
    other_engines: dict[str, ClipFeatureExtractor] | None = None,
) -> TrainingOutcome:
    """Train on `extractor`'s features (the engine the daemon runs); the new head is also scored
    on the test split's features from each of `other_engines`, side by side in the report."""
    # Each picture once: a copy in two splits would be tested on as if unseen.
    read = _extract(options, extractor, extracted_items=None)
    extracted = distinct_images(read)
    counts = {label: extracted.count(label) for label in LABEL_ORDER}
    require_enough(
        counts,
        minimum_per_class=options.fractions.minimum_per_class(),
        left_out=len(extracted.skipped) - len(read.skipped),
    )
    fitted = _fit(options, extracted)
    others = _on_other_engines(options, other_engines or {}, extracted, fitted)  # before the lock: slow
    # From the comparison to the promotion the registry is this run's: another training (or a
    # `models promote`) that promotes meanwhile would otherwise be replaced by a head never compared
    # with it. The version is named inside, so two runs never pick the same name.
    with registry_lock(options.registry):
        fitted = _named(fitted, new_version_name(options.registry))
        comparison = _compare(options, extractor, extracted, fitted)
        engines = {extractor.runtime.tag: comparison.results[fitted.version]} | _engine_results(
            others, extracted, fitted, comparison.scored
        )
        if comparison.current_unknown and options.promote == "auto":
            # Promoted, it would replace a head it was never compared with: the daemon's.
            promoted, decision = False, "not promoted"
        else:
            promoted, decision = decide_promotion(
                options.promote, fitted.version, comparison.results, comparison.current
            )
        decision += comparison.note
        folder = register_run(options, extractor, extracted, fitted, comparison, counts, engines, decision)
        if promoted:
            promote(options.registry, fitted.version)
    return TrainingOutcome(
        version=fitted.version,
        folder=folder,
        results=comparison.results,
        promoted=promoted,
        decision=decision,
        extraction_seconds=extracted.seconds,
        fit_seconds=fitted.seconds,
        skipped=extracted.skipped,
        engines=engines,
    )


def _on_other_engines(
    options: TrainingOptions,
    others: dict[str, ClipFeatureExtractor],
    extracted: ExtractedFeatures,
    fitted: _Fitted,
) -> dict[str, ExtractedFeatures]:
    """Each other engine's features of the test split's images."""
    test_items = [extracted.items[index] for index in fitted.split.test]
    return {tag: _extract(options, other, extracted_items=test_items) for tag, other in others.items()}


def _engine_results(
    others: dict[str, ExtractedFeatures], extracted: ExtractedFeatures, fitted: _Fitted, scored: np.ndarray
) -> dict[str, dict[str, Any]]:
    """The new head's metrics on each other engine's features of the images the comparison scored
    every model on (the serving engine's row is the comparison's: the same images)."""
    wanted = {extracted.content_hashes[index] for index in scored}
    results = {}
    for tag, features in others.items():
        rows = np.array([i for i, key in enumerate(features.content_hashes) if key in wanted], dtype=np.intp)
        probabilities = fitted.head.positive_probability(features.features[rows])
        results[tag] = classification_metrics(
            features.labels[rows], probabilities, threshold=fitted.head.threshold
        )
    return results


def _extract(
    options: TrainingOptions, extractor: ClipFeatureExtractor, *, extracted_items: list[LabelledImage] | None
) -> ExtractedFeatures:
    """Features of the labelled folder (or of `extracted_items`, read before), cached per engine."""
    return extract_cached(
        scan_labelled_folder(options.data) if extracted_items is None else extracted_items,
        extractor=extractor,
        cache_root=options.feature_cache,
        batch_size=options.extract_batch_size,
        max_pixels=options.max_pixels,
        max_file_bytes=options.max_file_bytes,
        progress=options.progress,
    )


def _fit(options: TrainingOptions, extracted: ExtractedFeatures) -> _Fitted:
    split = stratified_split(
        extracted.labels, keys=extracted.content_hashes, fractions=options.fractions, seed=options.fit.seed
    )
    x, y = extracted.features, extracted.labels
    started = time.perf_counter()
    model, history = fit_head(
        x[split.train], y[split.train], x[split.validation], y[split.validation], settings=options.fit
    )
    seconds = time.perf_counter() - started
    head = KerasHead(model, threshold=0.5, version="")  # named when it is registered (_named)
    head.threshold = choose_threshold(y[split.validation], head.positive_probability(x[split.validation]))
    return _Fitted("", model, head, history, split, seconds)


def _named(fitted: _Fitted, version: str) -> _Fitted:
    fitted.head.version = version
    return replace(fitted, version=version)


def _compare(
    options: TrainingOptions, extractor: ClipFeatureExtractor, extracted: ExtractedFeatures, fitted: _Fitted
) -> _Comparison:
    """The new head, zero-shot, a logistic probe and the current head, on the test split only: on
    its images the current head did not learn, where enough of each class are left."""
    x, y = extracted.features, extracted.labels
    incumbent, note, unknown = None, "", False
    try:
        current = current_version(options.registry)
    except RegistryError as error:  # a finished run is not lost to a hand-edited pointer
        current, note, unknown = None, f" (the current head is not known: {error})", True
    if current is not None:
        try:
            incumbent = load_registered_head(options.registry, current, clip=extractor)
        except RegistryError as error:
            note = f" (current head {current} not compared: {error})"
    scored, scored_note = _scored(options, extracted, fitted.split.test, current if incumbent else None)
    x_test, note = x[scored], note + scored_note
    probabilities = {fitted.version: (fitted.head.positive_probability(x_test), fitted.head.threshold)}
    zero_shot = build_zero_shot_head(extractor, options.prompts)
    probabilities[ZERO_SHOT] = (zero_shot.positive_probability(x_test), zero_shot.threshold)
    probe = LogisticRegression(max_iter=5000, class_weight="balanced")
    probe.fit(x[fitted.split.train], y[fitted.split.train])
    probabilities[LOGISTIC] = (probe.predict_proba(x_test)[:, 1], 0.5)
    if incumbent is not None and current is not None:
        probabilities[current] = (incumbent.positive_probability(x_test), incumbent.threshold)
    results = {
        name: classification_metrics(y[scored], positive, threshold=threshold)
        for name, (positive, threshold) in probabilities.items()
    }
    return _Comparison(probabilities, results, current, note, scored, current_unknown=unknown)


def _scored(
    options: TrainingOptions, extracted: ExtractedFeatures, test: np.ndarray, current: str | None
) -> tuple[np.ndarray, str]:
    """The test images every model is scored on, and what the report says of them: those the
    current head did not learn (it would look better than it is on the others), unless that
    leaves a class fewer than two."""
    if current is None:
        return test, ""
    learnt = learnt_images(options.registry, current)
    if learnt is None:
        return test, f" (current head {current} does not record what it learnt: it may be scored on some)"
    hashes = extracted.content_hashes
    unseen = np.array([index for index in test if hashes[index] not in learnt], dtype=np.intp)
    if len(unseen) == len(test):
        return test, ""
    of_the_test = f"{len(test) - len(unseen)} of the {len(test)} test images"
    if np.bincount(extracted.labels[unseen], minlength=2).min() < 2:
        return test, f" (current head {current} learnt {of_the_test} and is scored on them: too few others)"
    return (
        unseen,
        f" (current head {current} learnt {of_the_test}: every model scored on the other {len(unseen)})",
    )
