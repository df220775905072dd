"""The results database: the SQLAlchemy model of the `results` table and the engine that writes it.

The schema itself comes from the Alembic migrations in `migrations/`; this module only describes
it (the migrations read this metadata) and connects to it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names, so Alembic batch migrations on SQLite can find them again.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


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

    def bind_processor(self, dialect: Any) -> Callable[[datetime | None], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # SQLite keeps it as text: isoformat writes the dialect's own storage format
        # ('2026-11-25 17:30:08.123456') in one C call, where the generic path takes three Python
        # steps a value; a result row has three, and the daemon writes thousands a second. The
        # daemon's own times are in UTC already: written as they are, less their '+00:00'.
        def process(value: datetime | None) -> str | None:
            if value is not None and value.tzinfo is UTC:
                return value.isoformat(" ", "microseconds")[:-6]
            naive = self.process_bind_param(value, dialect)
            return naive.isoformat(sep=" ", timespec="microseconds") if naive is not None else None

        return process


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
    # `inbox` for frames the daemon took from the inbox; `archive:<folder>` for frames `backfill`
    # classified where they lie (source_path relative to that folder, stored_path the file itself).
    source: Mapped[str] = mapped_column(Text, server_default="inbox")

    __table_args__ = (
        CheckConstraint("status IN ('ok', 'failed')", name="status"),
        CheckConstraint("label IS NULL OR label IN ('female', 'male')", name="label"),
        Index("ix_results_processed_at", "processed_at"),
        Index("ix_results_camera_processed_at", "camera", "processed_at"),
        Index("ix_results_label_processed_at", "label", "processed_at"),
        Index("ix_results_status_processed_at", "status", "processed_at"),
        Index("ix_results_source_source_path", "source", "source_path"),
    )


# When a frame was captured (its file's time; rows without one: when it was processed), what
# summaries, the dashboard and `--time captured` filter and group on: indexed as that expression.
captured_at = func.coalesce(Result.__table__.c.file_mtime, Result.__table__.c.processed_at)
Index("ix_results_captured", captured_at)
Index("ix_results_camera_captured", Result.__table__.c.camera, captured_at)


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


class Review(Base):
    """An operator's judgement of one frame (`cctv-gender serve`'s review page or API). The model's
    row is never rewritten: the newest review of a frame is what `dataset export` trains on."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(Integer, ForeignKey("results.id", ondelete="CASCADE"))
    # female, male, or unsure (left out of training sets).
    label: Mapped[str] = mapped_column(String(16))
    # The token's name (web.token_name), or `local` when the web server needs no token.
    reviewer: Mapped[str] = mapped_column(String(64))
    reviewed_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("label IN ('female', 'male', 'unsure')", name="label"),
        Index("ix_reviews_result_id_id", "result_id", "id"),
    )


def utc_now() -> datetime:
    return datetime.now(UTC)
