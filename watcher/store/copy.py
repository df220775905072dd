"""`cctv-gender db copy --to URL`: move results from this config's database to another one.

Used once when a site outgrows SQLite: the target is migrated to the current schema, then rows
are copied in chunks, each chunk one transaction. The frame key is the identity, so a copy that
was interrupted (or repeated) can simply be run again: rows already in the target are skipped.
Row ids are the target's own, given in the source's order; the frame key, paths and times are
kept as they are. Reviews follow their rows (matched by frame key), and a review already in the
target is not copied again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy import Engine, insert, select, text

from watcher.store.migrate import upgrade_to_head
from watcher.store.records import result_record
from watcher.store.schema import Result, Review
from watcher.store.session import orm_session, transaction, translated_errors
from watcher.store.writes import insert_new_rows_as_given

logger = logging.getLogger(__name__)

CHUNK_ROWS = 1000


@dataclass
class CopyReport:
    read: int = 0
    copied: int = 0
    seconds: float = 0.0
    reviews_copied: int = 0

    @property
    def already_there(self) -> int:
        return self.read - self.copied


def copy_results(source: Engine, target: Engine, *, chunk_rows: int = CHUNK_ROWS) -> CopyReport:
    upgrade_to_head(target)
    report = CopyReport()
    started = time.perf_counter()
    with orm_session(source) as session:
        rows = session.scalars(select(Result).order_by(Result.id).execution_options(yield_per=chunk_rows))
        for chunk in rows.partitions():
            # In the source's id order, not the frame keys' (random): ids stay in commit order.
            records = [result_record(row) for row in chunk]
            with transaction(target) as connection:
                report.copied += len(insert_new_rows_as_given(connection, records))
            report.read += len(chunk)
            logger.info("copied %d of %d rows read so far", report.copied, report.read)
    report.reviews_copied = copy_reviews(source, target, chunk_rows=chunk_rows)
    report.seconds = time.perf_counter() - started
    return report


def copy_reviews(source: Engine, target: Engine, *, chunk_rows: int = CHUNK_ROWS) -> int:
    """Every review of the source onto the same frame's row in the target (ids differ between the
    two; the frame key does not). Reviews are people's work: few enough to hold in memory."""
    with orm_session(source) as session:
        reviews = session.execute(
            select(Result.frame_key, Review.label, Review.reviewer, Review.reviewed_at)
            .join(Result, Result.id == Review.result_id)
            .order_by(Review.id)
        ).all()
    if not reviews:
        return 0
    keys = sorted({review.frame_key for review in reviews})
    with transaction(target) as connection:
        target_ids: dict[str, int] = {}
        for start in range(0, len(keys), chunk_rows):
            chunk = keys[start : start + chunk_rows]
            found = connection.execute(select(Result.frame_key, Result.id).where(Result.frame_key.in_(chunk)))
            target_ids.update({key: row_id for key, row_id in found})
        there = {
            tuple(row)
            for row in connection.execute(
                select(Review.result_id, Review.label, Review.reviewer, Review.reviewed_at)
            )
        }
        # A frame committed (and reviewed) while the rows were being copied has no row in the
        # target yet: its reviews follow it at the next run, as the row does.
        copyable = [review for review in reviews if review.frame_key in target_ids]
        if len(copyable) < len(reviews):
            logger.warning(
                "%d reviews of rows stored during the copy wait for the next run",
                len(reviews) - len(copyable),
            )
        new = [
            {"result_id": target_ids[review.frame_key], "label": review.label, "reviewer": review.reviewer,
             "reviewed_at": review.reviewed_at}
            for review in copyable
            if (target_ids[review.frame_key], review.label, review.reviewer, review.reviewed_at) not in there
        ]  # fmt: skip
        if new:
            connection.execute(insert(Review), new)
    return len(new)


def same_postgresql_tables(source: Engine, target: Engine) -> bool:
    """Whether two PostgreSQL URLs reach the same tables under different spellings (`localhost`
    for 127.0.0.1, a port left out, a service file): the same server (its system identifier),
    database and schema. Another schema of the same database is another target."""
    if source.dialect.name != "postgresql" or target.dialect.name != "postgresql":
        return False
    return _tables_of(source) == _tables_of(target)


def _tables_of(engine: Engine) -> tuple[object, ...]:
    where = text("SELECT system_identifier, current_database(), current_schema() FROM pg_control_system()")
    with translated_errors(), engine.connect() as connection:
        return tuple(connection.execute(where).one())
