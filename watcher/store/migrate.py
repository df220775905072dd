"""Applying the Alembic migrations in `migrations/` from Python (`db upgrade` and `watch`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

import migrations
from watcher.store.errors import StorageFailed, StorageUnavailable
from watcher.store.session import translated_errors

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent
# Any fixed 64-bit number: the advisory lock's name, shared by every cctv-gender process.
MIGRATION_LOCK_KEY = 0x6363_7476_6D69_67  # "cctvmig"
# How long a start waits for another process's migration (a new index on a large table takes
# minutes), where database.busy_timeout_ms (10 s) gave up and the waiting daemons stopped. Under
# systemd's TimeoutStopSec (180 s): a stop asked for meanwhile is acted on once it ends.
MIGRATION_WAIT_S = 120.0
MIGRATION_POLL_S = 0.25


def _alembic_config(engine: Engine) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # env.py uses this engine instead of building its own from a URL.
    config.attributes["engine"] = engine
    return config


class NewerSchema(StorageFailed):
    """The database's revision is none of this release's migrations: a newer cctv-gender
    migrated it. Nothing here can read or upgrade it (Alembic would fail on the unknown id)."""


def require_known_revision(revision: str | None) -> None:
    """NewerSchema unless `revision` is empty (None) or one of `migrations/`'s."""
    if revision is None:
        return
    scripts = ScriptDirectory(str(MIGRATIONS_DIR))
    if revision not in {script.revision for script in scripts.walk_revisions()}:
        raise NewerSchema(
            f"its schema is at revision {revision}, which this cctv-gender does not know (its newest "
            f"is {scripts.get_current_head()}): a newer version migrated it; run that version"
        )


def upgrade_to_head(engine: Engine) -> str | None:
    """Bring the schema to the newest revision; returns that revision. NewerSchema when a newer
    release has migrated it past what this one knows."""
    config = _alembic_config(engine)
    with translated_errors(), _one_migrator_at_a_time(engine, wait_s=MIGRATION_WAIT_S):
        before = current_revision(engine)
        require_known_revision(before)
        command.upgrade(config, "head")
        after = current_revision(engine)
    if before != after:
        logger.info("database migrated from %s to %s", before or "empty", after)
    return after


@contextmanager
def _one_migrator_at_a_time(engine: Engine, *, wait_s: float) -> Iterator[None]:
    """On PostgreSQL, daemons starting together on several hosts would race to create the same
    tables: an advisory lock lets one migrate while the others wait, then find nothing to do.
    (SQLite serialises writers itself.)"""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as holder:
        _take_migration_lock(holder, wait_s=wait_s)
        try:
            yield
        finally:
            holder.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")
            holder.commit()


def _take_migration_lock(holder: Connection, *, wait_s: float) -> None:
    """The migration lock, tried until `wait_s` have passed (a blocking pg_advisory_lock would give
    up at the connection's lock_timeout); StorageUnavailable then. Each try is its own transaction:
    nothing is held open while another process migrates."""
    deadline = time.monotonic() + wait_s
    waited = False
    while True:
        taken = holder.exec_driver_sql(f"SELECT pg_try_advisory_lock({MIGRATION_LOCK_KEY})").scalar()
        holder.commit()
        if taken:
            if waited:
                logger.info("the other process's migration is done")
            return
        if time.monotonic() >= deadline:
            raise StorageUnavailable(
                f"another process has been migrating the database for over {wait_s:g} s "
                "(or holds its migration lock): try again once it is done"
            )
        if not waited:
            logger.info("another cctv-gender process is migrating the database: waiting for it")
            waited = True
        time.sleep(MIGRATION_POLL_S)


def current_revision(engine: Engine) -> str | None:
    """The database's revision; NewerSchema where it has several (a newer release's branches:
    this release has none)."""
    with translated_errors(), engine.connect() as connection:
        heads = MigrationContext.configure(connection).get_current_heads()
    if len(heads) > 1:
        raise NewerSchema(
            f"its schema is at revisions {', '.join(heads)}, branches this cctv-gender does not know: "
            "a newer version migrated it; run that version"
        )
    return heads[0] if heads else None


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
