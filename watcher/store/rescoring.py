"""Relabelling stored `ok` rows from their stored CLIP embeddings (`cctv-gender rescore`).

Only rows whose embedding came from the given CLIP model and preprocessing version are touched,
whichever engine computed them; the classifier is the caller's, so the store knows no model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import Engine, func, or_, select, update

from watcher.store.records import Status
from watcher.store.schema import Result
from watcher.store.session import orm_session

CHUNK_ROWS = 1000


class Scored(Protocol):
    @property
    def label(self) -> str: ...

    @property
    def probability(self) -> float: ...


# Embeddings (as stored: float16 blobs) in, one label and probability per embedding out.
Classify = Callable[[list[bytes]], Sequence[Scored]]


@dataclass(frozen=True)
class RescoreReport:
    rescored: int
    skipped: int  # ok rows in range that have no usable embedding


def rescore_rows(
    engine: Engine,
    *,
    classify: Classify,
    model_version: str,
    embedding_model: str,
    since: datetime | None,
    chunk_rows: int = CHUNK_ROWS,
) -> RescoreReport:
    """Relabel every `ok` row in range (and there when it starts) whose embedding matches; one
    transaction per chunk, so a chunk's rows are read and rewritten under the same write lock."""
    in_range = [Result.status == Status.OK]
    if since is not None:
        in_range.append(Result.processed_at >= since)
    # Any engine's embeddings of the same CLIP and preprocessing: every engine that runs passed the
    # fidelity gate against torch fp32 (model.engine_choice), and a stored embedding is float16.
    # A prefix compared byte for byte: LIKE ignores case on SQLite.
    prefix = f"{embedding_model} "
    same_features = or_(
        Result.embedding_model == embedding_model,
        func.substr(Result.embedding_model, 1, len(prefix)) == prefix,
    )
    with orm_session(engine) as session:
        # Only the rows there now: one the daemon stores meanwhile (with a head promoted since,
        # say) is not relabelled with this one, nor counted, and a busy daemon cannot keep it going.
        newest = session.scalar(select(func.max(Result.id))) or 0
        in_range.append(Result.id <= newest)
        total = session.scalar(select(func.count()).select_from(Result).where(*in_range)) or 0
    usable = [*in_range, Result.embedding.is_not(None), same_features]
    rescored, last_id = 0, 0
    while True:
        with orm_session(engine, write=True) as session:
            chunk = session.execute(
                select(Result.id, Result.embedding)
                .where(*usable, Result.id > last_id)
                .order_by(Result.id)
                .limit(chunk_rows)
            ).all()
            if not chunk:
                break
            # The query takes only rows whose embedding is not null.
            blobs = [embedding for _, embedding in chunk if embedding is not None]
            for (row_id, _), scored in zip(chunk, classify(blobs), strict=True):
                session.execute(
                    update(Result)
                    .where(Result.id == row_id)
                    .values(label=scored.label, probability=scored.probability, model_version=model_version)
                )
            rescored += len(chunk)
            last_id = chunk[-1][0]
    return RescoreReport(rescored=rescored, skipped=total - rescored)
