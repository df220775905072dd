"""The results database: the SQLAlchemy model of the `results` table and the engine that writes it.

The schema itself comes from the Alembic migrations in `migrations/`; this module only describes
it (the migrations read this metadata) and connects to it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Connection,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
    make_url,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

logger = logging.getLogger(__name__)

# Stable constraint names, so Alembic batch migrations on SQLite can find them again.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Status(StrEnum):
    OK = "ok"
    FAILED = "failed"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python; stored as UTC without offset ('2026-11-25 17:30:08.123456')
    so SQLite sorts and compares it as text and any SQL client reads it plainly."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Result(Base):
    """One row per frame taken from the inbox."""

    __tablename__ = "results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Identity of one intake of one file (its claim); unique so a re-processed frame can never
    # produce a second row.
    frame_key: Mapped[str] = mapped_column(String(32), unique=True)
    # TEXT: a camera folder's name escaped from non-UTF-8 bytes can pass 255 characters. (SQLite
    # keeps its declared VARCHAR(255), which it never enforces; see migration 0006.)
    camera: Mapped[str | None] = mapped_column(Text().with_variant(String(255), "sqlite"))
    source_path: Mapped[str] = mapped_column(Text)
    stored_path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    # BIGINT: a 2.5 GB file overflows PostgreSQL's INTEGER. (SQLite's INTEGER is 64-bit already.)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    file_mtime: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    label: Mapped[str | None] = mapped_column(String(16))
    probability: Mapped[float | None] = mapped_column(Float)
    model_version: Mapped[str | None] = mapped_column(String(255))
    # What CLIP computed in for this row: fp32, fp16 or bf16 (features differ slightly).
    precision: Mapped[str | None] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    # The CLIP features (float16, little-endian) and what produced them ("<clip id> <preprocessing
    # version>"), for re-classifying with another head without running CLIP again.
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    embedding_model: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (
        CheckConstraint("status IN ('ok', 'failed')", name="status"),
        CheckConstraint("label IS NULL OR label IN ('female', 'male')", name="label"),
        Index("ix_results_processed_at", "processed_at"),
        Index("ix_results_camera_processed_at", "camera", "processed_at"),
        Index("ix_results_label_processed_at", "label", "processed_at"),
        Index("ix_results_status_processed_at", "status", "processed_at"),
    )


class Instance(Base):
    """One row per daemon instance, refreshed every few seconds while it runs: the one place where
    daemons on several hosts sharing an inbox and a database can all be seen."""

    __tablename__ = "instances"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # running, stopped
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Frames it holds claimed (in its batch, or waiting for the database) at its last heartbeat.
    claimed: Mapped[int] = mapped_column(Integer)
    frames_ok: Mapped[int] = mapped_column(Integer)
    frames_failed: Mapped[int] = mapped_column(Integer)
    frames_per_s: Mapped[float] = mapped_column(Float)
    model_version: Mapped[str | None] = mapped_column(String(255))
    # Starts that found this row still `running` (the previous run never said it stopped: it
    # crashed or was killed), and when that run was last seen. Kept across heartbeats.
    crashes: Mapped[int] = mapped_column(Integer, server_default="0")
    last_crash_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


def upsert_capable_insert(dialect: str) -> Any:
    """The dialect's INSERT construct, which has ON CONFLICT (both engines we support do)."""
    return postgresql_insert if dialect == "postgresql" else sqlite_insert


def insert_new_rows(connection: Connection, rows: list[Result]) -> set[str]:
    """INSERT the rows whose frame key has no row yet; returns the keys that were inserted.

    The frame key is the idempotency key: a batch retried after a commit whose answer was lost
    (a connection dropped mid-commit) inserts nothing twice, on SQLite and PostgreSQL alike.
    Rows go in key order, so concurrent writers take their index locks in the same order.
    """
    if not rows:
        return set()
    insert = upsert_capable_insert(connection.dialect.name)
    columns = [column.key for column in Result.__table__.columns if column.key != "id"]
    values = [
        {name: getattr(row, name) for name in columns} for row in sorted(rows, key=lambda r: r.frame_key)
    ]
    statement = (
        insert(Result).on_conflict_do_nothing(index_elements=["frame_key"]).returning(Result.frame_key)
    )
    return set(connection.execute(statement, values).scalars())


def sqlite_file(url: str | URL) -> Path | None:
    """The file a SQLite URL names (also in URI form, `sqlite:///file:/path?uri=true`), or None
    for another database or an in-memory one. Raises ArgumentError for a URL that is not one."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or database in (None, "", ":memory:"):
        return None
    assert database is not None
    if parsed.query.get("uri") == "true" or database.startswith("file:"):
        database = database.removeprefix("file:").partition("?")[0]
    return Path(database)


def make_engine(url: str, *, busy_timeout_ms: int, read_only: bool = False) -> Engine:
    """An engine for `url`; SQLite gets WAL, synchronous=FULL, a busy timeout and BEGIN IMMEDIATE.

    Other servers (PostgreSQL) get a connection check on checkout, so a restarted server costs a
    reconnect instead of an error, and a name that shows in pg_stat_activity.

    `read_only` is for commands that only read (`results`, `summary`, `status`, the source of
    `db copy`): writes are refused, and on SQLite transactions start deferred, so a reader left
    open (an export piped into `less`) holds a WAL snapshot and never the daemon's write lock.
    """
    if not url.startswith("sqlite"):
        connect_args = {"application_name": "cctv-gender"} if url.startswith("postgresql") else {}
        # hide_parameters: an error's message never carries a batch's rows (embeddings included).
        engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _session_settings(dbapi_connection: Any, _record: Any) -> None:
            # Session settings, not connect options: the URL may carry its own `options` (a
            # search_path, say), which connect_args would replace. lock_timeout is the busy
            # timeout's PostgreSQL twin: a table locked by another session (VACUUM FULL, a
            # migration) parks the batch after it, instead of blocking the daemon and its SIGTERM.
            cursor = dbapi_connection.cursor()
            if url.startswith("postgresql"):
                cursor.execute(f"SET lock_timeout = {int(busy_timeout_ms)}")
            if read_only:
                cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            cursor.close()
            dbapi_connection.commit()

        return engine
    engine = create_engine(url, connect_args={"timeout": busy_timeout_ms / 1000}, hide_parameters=True)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event below issue BEGIN itself (pysqlite would defer it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        if read_only:
            cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        if read_only:
            # Deferred: in WAL a reader takes a snapshot and no lock that a writer waits for.
            connection.exec_driver_sql("BEGIN")
            return
        # Take the write lock up front: a deferred transaction that later upgrades to a writer
        # can fail with SQLITE_BUSY instead of waiting out the busy timeout.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def embedding_model_id(clip_model: str, preprocessing_version: str) -> str:
    return f"{clip_model} {preprocessing_version}"


def pack_embedding(features: np.ndarray) -> bytes:
    return features.astype("<f2").tobytes()


def unpack_embeddings(blobs: list[bytes]) -> np.ndarray:
    return np.stack([np.frombuffer(blob, dtype="<f2") for blob in blobs]).astype(np.float32)


def utc_now() -> datetime:
    return datetime.now(UTC)
