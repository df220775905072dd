"""What a training run leaves in the registry: its version folder (head, metadata, report)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model.clip_features import PREPROCESSING_VERSION, ClipFeatureExtractor
from model.dataset import fingerprint
from model.evaluation import roc_points
from model.extraction import ExtractedFeatures
from model.labels import LABEL_ORDER, Label
from model.registry import (
    HEAD_FILE,
    LEARNT_FILE,
    METADATA_FILE,
    HeadMetadata,
    package_versions,
    register_version,
)
from model.report import REPORT, write_report

if TYPE_CHECKING:
    from model.train_run import TrainingOptions, _Comparison, _Fitted


def register_run(
    options: TrainingOptions,
    extractor: ClipFeatureExtractor,
    extracted: ExtractedFeatures,
    fitted: _Fitted,
    comparison: _Comparison,
    counts: dict[Label, int],
    engines: dict[str, dict[str, Any]],
    decision: str,
) -> Path:
    """The new version's folder (head, metadata, report), written aside and renamed into place."""
    metadata = _metadata(options, extractor, extracted, fitted, comparison, counts, engines)
    summary = _summary(options, extractor, extracted, fitted, counts, decision)
    y_test = extracted.labels[comparison.scored]
    curves = {name: roc_points(y_test, positive) for name, (positive, _) in comparison.probabilities.items()}
    # What it learnt: a later run scores it only on images outside this (see model.train_run).
    hashes = extracted.content_hashes
    learnt = sorted({hashes[index] for index in [*fitted.split.train, *fitted.split.validation]})

    def write(folder: Path) -> None:
        fitted.model.save(folder / HEAD_FILE)
        (folder / METADATA_FILE).write_text(metadata.to_json(), encoding="utf-8")
        (folder / LEARNT_FILE).write_text(
            "".join(f"{content_hash}\n" for content_hash in learnt), encoding="ascii"
        )
        write_report(
            folder,
            version=fitted.version,
            results=comparison.results,
            summary=summary,
            skipped=extracted.skipped,
            history=fitted.history,
            curves=curves,
            engines=engines,
        )

    return register_version(options.registry, fitted.version, write)


def _summary(
    options: TrainingOptions,
    extractor: ClipFeatureExtractor,
    extracted: ExtractedFeatures,
    fitted: _Fitted,
    counts: dict[Label, int],
    decision: str,
) -> dict[str, Any]:
    split, val_loss = fitted.split, fitted.history.get("val_loss", [])
    return {
        "data": str(options.data),
        "counts": ", ".join(f"{label.upper()} {count}" for label, count in counts.items()),
        "clip_model": extractor.identity.name,
        "engine": extractor.runtime.tag,
        "seed": options.fit.seed,
        "split": f"train {len(split.train)}, validation {len(split.validation)}, test {len(split.test)}",
        "decision": decision,
        "extraction_seconds": extracted.seconds,
        "extracted": extracted.extracted,
        "cache_hits": extracted.cache_hits,
        "fit_seconds": fitted.seconds,
        "epochs_run": len(fitted.history.get("loss", [])),
        "best_epoch": int(np.argmin(val_loss)) + 1 if val_loss else 0,
    }


def _metadata(
    options: TrainingOptions,
    extractor: ClipFeatureExtractor,
    extracted: ExtractedFeatures,
    fitted: _Fitted,
    comparison: _Comparison,
    counts: dict[Label, int],
    engines: dict[str, dict[str, Any]],
) -> HeadMetadata:
    split, version, results = fitted.split, fitted.version, comparison.results
    labelled = zip(extracted.content_hashes, map(_label_of, extracted.labels), strict=True)
    return HeadMetadata(
        version=version,
        clip_model=extractor.identity.name,
        clip_identity=extractor.identity.recorded(),
        feature_size=extractor.feature_size,
        preprocessing_version=PREPROCESSING_VERSION,
        threshold=fitted.head.threshold,
        extra={
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            # What computed the features it was trained on. Informational: every engine that runs
            # passed the fidelity gate against torch fp32, so a head serves on any of them.
            "features_engine": extractor.runtime.tag,
            "dataset_fingerprint": fingerprint(list(labelled)),
            "dataset": {"path": str(options.data), "counts": {str(k): v for k, v in counts.items()}},
            "split": {
                "train": len(split.train),
                "validation": len(split.validation),
                "test": len(split.test),
                # Of the test split, what the comparison scored every model on (see model.train_run).
                "scored": len(comparison.scored),
            },
            "seed": options.fit.seed,
            "metrics": {
                "test": results[version],
                "baselines": {n: r for n, r in results.items() if n != version},
                "engines": engines,
            },
            "package_versions": package_versions(),
            "report": REPORT,
        },
    )


def _label_of(index: int) -> Label:
    return LABEL_ORDER[int(index)]
