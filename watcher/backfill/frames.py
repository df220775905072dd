"""One batch of archive files through the daemon's own stages: read, check, hash and decode
(watcher.pipeline.decoding), CLIP and the head (watcher.pipeline.classifying), then rows keyed by
the archive's identity. The in-process and the Ray backfill both call these, so an archived frame
is classified exactly as the daemon would classify it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime

from model.heads import Head
from model.serving import load_serving_head
from watcher.backfill.archive import ArchiveFile, archive_frame_key
from watcher.config import Config
from watcher.intake.claimed import ClaimedFrame
from watcher.intake.names import storable
from watcher.pipeline.assembly import load_extractor
from watcher.pipeline.classifying import Classifier
from watcher.pipeline.decoding import read_and_decode
from watcher.pipeline.recording import frame_record
from watcher.pipeline.stages import Classified, Decoded, FrameBounds
from watcher.store.records import ResultRecord

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackfillModel:
    """CLIP and the head being served, as the daemon loads them."""

    classifier: Classifier
    head: Head


def load_model(config: Config) -> BackfillModel:
    extractor = load_extractor(config)
    head = load_serving_head(config.registry_dir, clip=extractor, prompts=config.model.zero_shot.by_label())
    return BackfillModel(Classifier(extractor, store_embeddings=config.database.store_embeddings), head)


def frame_bounds(config: Config) -> FrameBounds:
    return FrameBounds(max_pixels=config.inbox.max_pixels, max_file_bytes=config.inbox.max_file_bytes)


def as_claimed(file: ArchiveFile, *, received_at: datetime) -> ClaimedFrame:
    """The archive file as the stages see a frame: read where it lies (never moved)."""
    return ClaimedFrame(
        key=file.relative.as_posix(),
        relative=file.relative,
        work_path_text=str(file.path),
        received_at=received_at,
    )


def decode_file(file: ArchiveFile, bounds: FrameBounds, *, received_at: datetime) -> Decoded:
    frame = as_claimed(file, received_at=received_at)
    read = read_and_decode(frame, bounds)
    return Decoded(frame, read.facts, read.pixels, read.error)


def classify(model: BackfillModel, decoded: list[Decoded]) -> list[Classified]:
    """Each frame classified or failed with its reason; never an exception for the batch (a Ray
    task that raises would fail the whole job)."""
    try:
        return model.classifier.classify(decoded, head=model.head)
    except Exception as error:  # noqa: BLE001 - the batch's frames fail, the backfill goes on
        logger.exception("model failed on a batch of %d frames", len(decoded))
        reason = f"model error: {type(error).__name__}: {error}"
        return [Classified(item.frame, item.facts, None, item.error or reason) for item in decoded]


def archive_records(
    classified: list[Classified], files: dict[str, ArchiveFile], *, source: str, processed_at: datetime
) -> list[ResultRecord]:
    """The rows: `stored_path` is the file in the archive, where it stays."""
    records = []
    for item in classified:
        frame, facts = item.frame, item.facts
        file = files[frame.key]
        records.append(
            frame_record(
                frame,
                replace(facts, file_mtime=facts.file_mtime or file.mtime),
                item.classification,
                error=item.error,
                frame_key=archive_frame_key(source, frame.relative, sha256=facts.sha256, file=file),
                stored_path=storable(str(file.path)),
                processed_at=processed_at,
                source=source,
            )
        )
    return records
