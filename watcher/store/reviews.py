"""Operators' reviews of frames: recorded one short transaction each, read back newest-wins.

A review never rewrites the model's row: it is its own row in `reviews`, and the newest review of
a frame is its reviewed label (for the review pages and for `dataset export`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Engine, Select, func, insert, select
from sqlalchemy.sql import Subquery

from watcher.store.queries import ResultFilter
from watcher.store.records import Status
from watcher.store.schema import Result, Review, utc_now
from watcher.store.session import transaction, translated_errors

# Review rows fetched at a time while exporting.
STREAM_CHUNK = 1000


class ReviewLabel(StrEnum):
    FEMALE = "female"
    MALE = "male"
    UNSURE = "unsure"  # looked at, but no label to train on


class UnknownResult(LookupError):
    """No result row has this id."""


class NotReviewable(ValueError):
    """The row is a frame that could not be classified (status failed): no prediction to review."""

    def __init__(self, result_id: int) -> None:
        super().__init__(
            f"frame {result_id} could not be classified (status failed): there is no prediction to review"
        )
        self.result_id = result_id


@dataclass(frozen=True)
class ReviewRecord:
    id: int
    result_id: int
    label: ReviewLabel
    reviewer: str
    reviewed_at: datetime


@dataclass(frozen=True)
class ReviewedFrame:
    """A result row as training sees it: where its frame lies, and its labels."""

    result_id: int
    camera: str | None
    stored_path: str
    model_label: str | None
    review_label: ReviewLabel | None  # the newest review's, None when never reviewed


def record_review(
    engine: Engine, *, result_id: int, label: ReviewLabel, reviewer: str, now: datetime | None = None
) -> ReviewRecord:
    """One review, in one transaction that holds the write lock only for its insert. Raises
    UnknownResult for no such row, NotReviewable for a failed one (nothing is stored)."""
    reviewed_at = now or utc_now()
    with transaction(engine) as connection:
        status = connection.execute(select(Result.status).where(Result.id == result_id)).scalar_one_or_none()
        if status is None:
            raise UnknownResult(result_id)
        if status != Status.OK:
            # Nothing any reader would use (the queue, export and training take `ok` rows only),
            # and a review kept on a failed row is one a backfill's supersede must clean up.
            raise NotReviewable(result_id)
        review_id = connection.execute(
            insert(Review)
            .values(result_id=result_id, label=str(label), reviewer=reviewer, reviewed_at=reviewed_at)
            .returning(Review.id)
        ).scalar_one()
    return ReviewRecord(review_id, result_id, label, reviewer, reviewed_at)


def reviews_of(engine: Engine, result_id: int) -> list[ReviewRecord]:
    """Every review of one frame, newest first."""
    statement = select(Review).where(Review.result_id == result_id).order_by(Review.id.desc())
    with translated_errors(), engine.connect() as connection:
        return [_record(row) for row in connection.execute(statement).mappings()]


def latest_reviews(engine: Engine, result_ids: list[int]) -> dict[int, ReviewRecord]:
    """The newest review of each of these frames that has one."""
    if not result_ids:
        return {}
    newest = _newest_review_ids().where(Review.result_id.in_(result_ids)).subquery()
    statement = select(Review).join(newest, newest.c.review_id == Review.id)
    with translated_errors(), engine.connect() as connection:
        return {row["result_id"]: _record(row) for row in connection.execute(statement).mappings()}


def review_queue(
    engine: Engine, *, filters: ResultFilter, unreviewed_only: bool, limit: int
) -> list[dict[str, Any]]:
    """Classified frames, the model's least confident first (what a reviewer should look at)."""
    newest = _newest_review_ids().subquery()
    statement = cast(
        "Select[Any]",
        select(
            Result.id,
            Result.camera,
            Result.label,
            Result.probability,
            Result.processed_at,
            Result.file_mtime,
            Result.source_path,
            Result.model_version,
        )  # fmt: skip
        .where(Result.status == Status.OK)
        .outerjoin(newest, newest.c.result_id == Result.id)
        .order_by(Result.probability.asc(), Result.id.desc())
        .limit(limit),
    )
    if unreviewed_only:
        statement = statement.where(newest.c.review_id.is_(None))
    with translated_errors(), engine.connect() as connection:
        return [dict(row) for row in connection.execute(filters.apply(statement)).mappings()]


def labelled_frames(engine: Engine, *, filters: ResultFilter, reviewed_only: bool) -> Iterator[ReviewedFrame]:
    """Classified frames with their newest review, oldest first, streamed."""
    newest = _newest_review_ids().subquery()
    statement = cast(
        "Select[Any]",
        select(Result.id, Result.camera, Result.stored_path, Result.label, Review.label.label("review"))
        .where(Result.status == Status.OK)
        .outerjoin(newest, newest.c.result_id == Result.id)
        .outerjoin(Review, Review.id == newest.c.review_id)
        .order_by(Result.id),
    )
    if reviewed_only:
        statement = statement.where(newest.c.review_id.is_not(None))
    with translated_errors(), engine.connect() as connection:
        rows = connection.execution_options(yield_per=STREAM_CHUNK).execute(filters.apply(statement))
        for row in rows:
            review = ReviewLabel(row.review) if row.review is not None else None
            yield ReviewedFrame(row.id, row.camera, row.stored_path, row.label, review)


def review_counts(engine: Engine) -> dict[str, int]:
    """Frames whose newest review says female, male or unsure."""
    newest: Subquery = _newest_review_ids().subquery()
    statement = select(Review.label, func.count()).join(newest, newest.c.review_id == Review.id)
    with translated_errors(), engine.connect() as connection:
        counts = {label: count for label, count in connection.execute(statement.group_by(Review.label))}
    return {str(label): counts.get(str(label), 0) for label in ReviewLabel}


def _newest_review_ids() -> Select[Any]:
    statement = select(Review.result_id, func.max(Review.id).label("review_id"))
    return cast("Select[Any]", statement.group_by(Review.result_id))


def _record(row: Any) -> ReviewRecord:
    label = ReviewLabel(row["label"])
    return ReviewRecord(row["id"], row["result_id"], label, row["reviewer"], row["reviewed_at"])
