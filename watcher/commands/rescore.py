"""`cctv-gender rescore`: re-classify stored rows from their stored CLIP embeddings.

Only rows whose embedding came from the head's CLIP model and preprocessing version are
rescored; CLIP itself never runs (unless the head asked for is zero-shot, which needs CLIP's
text encoder for its prompts).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from model.heads import Head
from watcher.store.embeddings import unpack_embeddings
from watcher.store.records import Status
from watcher.store.schema import Result

logger = logging.getLogger(__name__)

CHUNK = 1000


@dataclass(frozen=True)
class RescoreReport:
    rescored: int
    skipped: int  # ok rows in range that have no usable embedding


def rescore(engine: Engine, head: Head, *, embedding_model: str, since: datetime | None) -> RescoreReport:
    """Relabel every `ok` row in range whose embedding matches; one transaction per chunk."""
    in_range = [Result.status == Status.OK]
    if since is not None:
        in_range.append(Result.processed_at >= since)
    usable = [*in_range, Result.embedding.is_not(None), Result.embedding_model == embedding_model]
    rescored, last_id = 0, 0
    with Session(engine) as session:
        total = session.scalar(select(func.count()).select_from(Result).where(*in_range)) or 0
    while True:
        with Session(engine) as session, session.begin():
            chunk = session.execute(
                select(Result.id, Result.embedding)
                .where(*usable, Result.id > last_id)
                .order_by(Result.id)
                .limit(CHUNK)
            ).all()
            if not chunk:
                break
            # The query takes only rows whose embedding is not null.
            blobs = [embedding for _, embedding in chunk if embedding is not None]
            predictions = head.predict(unpack_embeddings(blobs))
            for (row_id, _), prediction in zip(chunk, predictions, strict=True):
                session.execute(
                    update(Result)
                    .where(Result.id == row_id)
                    .values(
                        label=prediction.label, probability=prediction.probability, model_version=head.version
                    )
                )
            rescored += len(chunk)
            last_id = chunk[-1][0]
    return RescoreReport(rescored=rescored, skipped=total - rescored)


def run_rescore(config: object, *, since: datetime | None, version: str | None) -> int:
    """The command: pick the head (registry version, current, or zero-shot) and rescore."""
    from model.clip_features import PREPROCESSING_VERSION
    from model.keras_head import KerasHead
    from model.registry import HEAD_FILE, HeadMetadata, RegistryError, current_version, version_dir
    from model.serving import ZERO_SHOT_PREFIX, build_zero_shot_head, refuse_if_incompatible
    from watcher.config import Config
    from watcher.errors import StartupError
    from watcher.pipeline.assembly import load_extractor
    from watcher.store.embeddings import embedding_model_id
    from watcher.store.opening import open_database

    assert isinstance(config, Config)
    engine = open_database(config, migrate=False)
    chosen = version or current_version(config.registry_dir) or "zero-shot"
    head: Head
    if chosen == "zero-shot" or chosen.startswith(ZERO_SHOT_PREFIX):
        extractor = load_extractor(config)
        head = build_zero_shot_head(extractor, config.model.zero_shot.by_label())
        embedding_model = embedding_model_id(extractor.source, PREPROCESSING_VERSION)
    else:
        try:
            folder = version_dir(config.registry_dir, chosen)
            metadata = HeadMetadata.read(folder)
            refuse_if_incompatible(metadata, clip_source=metadata.clip_model)
            head = KerasHead.load(folder / HEAD_FILE, threshold=metadata.threshold, version=metadata.version)
        except (RegistryError, OSError, ValueError) as error:
            raise StartupError(str(error)) from None
        embedding_model = embedding_model_id(metadata.clip_model, metadata.preprocessing_version)
    report = rescore(engine, head, embedding_model=embedding_model, since=since)
    print(f"rescored {report.rescored} rows with {head.version}")
    if report.skipped:
        print(
            f"{report.skipped} ok rows in range have no embedding from {embedding_model}; "
            "they were left as they are"
        )
    return 0
