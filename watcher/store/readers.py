"""What `status` reads from the database: recent counts, the last row's time, recent instances."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, func, select

from watcher.store.instances import InstanceRecord, instances_seen_since
from watcher.store.records import Status
from watcher.store.schema import Result
from watcher.store.session import orm_session


@dataclass(frozen=True)
class RecentActivity:
    processed: int  # `ok` rows processed since the time asked for
    failed: int
    last_processed_at: datetime | None  # of the newest row of all
    instances: tuple[InstanceRecord, ...]  # seen since the other time asked for, by name


def recent_activity(engine: Engine, *, processed_since: datetime, seen_since: datetime) -> RecentActivity:
    """One read (one snapshot) of the rows processed and the instances seen recently."""
    with orm_session(engine) as session:
        counts = dict(
            session.execute(
                select(Result.status, func.count())
                .where(Result.processed_at >= processed_since)
                .group_by(Result.status)
            ).all()
        )
        last = session.scalar(select(func.max(Result.processed_at)))
        instances = tuple(instances_seen_since(session, seen_since))
    if last is not None and last.tzinfo is None:
        last = last.replace(tzinfo=UTC)
    return RecentActivity(
        processed=counts.get(Status.OK, 0),
        failed=counts.get(Status.FAILED, 0),
        last_processed_at=last,
        instances=instances,
    )
