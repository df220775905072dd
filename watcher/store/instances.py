"""The `instances` table: each daemon's heartbeat row, written by it and read by `status`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from watcher.store.schema import Instance
from watcher.store.session import transaction
from watcher.store.writes import upsert_capable_insert


@dataclass(frozen=True)
class Beat:
    """What one heartbeat says about its instance (the row without its crash count)."""

    name: str
    host: str
    pid: int
    state: str
    started_at: datetime
    last_seen_at: datetime
    claimed: int
    frames_ok: int
    frames_failed: int
    frames_per_s: float
    model_version: str | None


@dataclass(frozen=True)
class Crash:
    """A start that found its instance's row still `running`: how many so far, and when."""

    crashes: int
    last_crash_at: datetime


@dataclass(frozen=True)
class InstanceRecord(Beat):
    """One row of `instances`: its last heartbeat, and its crashes."""

    crashes: int
    last_crash_at: datetime | None


def record_beat(engine: Engine, beat: Beat) -> None:
    """Insert or refresh the instance's row; its crash count and last crash are left as they are."""
    values = asdict(beat)
    insert = upsert_capable_insert(engine.dialect.name)
    statement = insert(Instance).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=["name"], set_={key: value for key, value in values.items() if key != "name"}
    )
    with transaction(engine) as connection:
        connection.execute(statement)


def record_clean_stop(engine: Engine, name: str) -> None:
    """The instance stopped cleanly (its in-progress area's mark says so), whatever its row says:
    its last heartbeat, `stopped`, may not have been written. Neither `status` nor its next start
    takes that stop for a crash."""
    statement = (
        update(Instance).where(Instance.name == name, Instance.state == "running").values(state="stopped")
    )
    with transaction(engine) as connection:
        connection.execute(statement)


def count_crash(engine: Engine, name: str) -> Crash | None:
    """If the instance's row still says `running`, count a crash (its last heartbeat is when it
    happened) and return the new count; None when the row says it stopped, or there is none."""
    statement = (
        update(Instance)
        .where(Instance.name == name, Instance.state == "running")
        .values(crashes=Instance.crashes + 1, last_crash_at=Instance.last_seen_at)
        .returning(Instance.crashes, Instance.last_crash_at)
    )
    with transaction(engine) as connection:
        row = connection.execute(statement).first()
    if row is None:
        return None
    return Crash(crashes=row.crashes, last_crash_at=row.last_crash_at)


def instances_seen_since(session: Session, since: datetime) -> list[InstanceRecord]:
    """The rows of instances that beat at or after `since`, by name (inside the caller's read)."""
    rows = session.scalars(select(Instance).where(Instance.last_seen_at >= since).order_by(Instance.name))
    return [
        InstanceRecord(
            name=row.name,
            host=row.host,
            pid=row.pid,
            state=row.state,
            started_at=row.started_at,
            last_seen_at=row.last_seen_at,
            claimed=row.claimed,
            frames_ok=row.frames_ok,
            frames_failed=row.frames_failed,
            frames_per_s=row.frames_per_s,
            model_version=row.model_version,
            crashes=row.crashes,
            last_crash_at=row.last_crash_at,
        )
        for row in rows
    ]
