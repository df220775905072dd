"""Opening the results database for a command: the engine, migrated or checked."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from watcher.config import Config, ConfigError
from watcher.errors import StartupError
from watcher.store.engine import make_engine, sqlite_file
from watcher.store.errors import StorageError
from watcher.store.migrate import current_revision, head_revision, upgrade_to_head


def open_database(config: Config, *, migrate: bool, read_only: bool = False) -> Engine:
    """An engine on `database.url`; `migrate` upgrades to head, otherwise the schema must be current.

    `read_only` (commands that only read) gives an engine that refuses writes and never holds
    the write lock the daemon needs (see `make_engine`); it cannot migrate.
    """
    if migrate and read_only:
        raise ValueError("a read-only engine cannot migrate")
    try:
        _make_sqlite_folder(config.database_url)
        engine = make_engine(
            config.database_url, busy_timeout_ms=config.database.busy_timeout_ms, read_only=read_only
        )
        if migrate:
            upgrade_to_head(engine)
        elif current_revision(engine) != head_revision():
            raise StartupError(
                f"the database at {engine.url.render_as_string(hide_password=True)} is not at the "
                "current schema; run `cctv-gender db upgrade`"
            )
    except (ArgumentError, NoSuchModuleError) as error:
        raise ConfigError(f"{config.source}: database.url: {error}") from None
    except StorageError as error:
        # Unreachable, locked, or not a database at all ("file is not a database").
        raise StartupError(f"cannot open the database {config.database_url}: {error}") from None
    except OSError as error:
        raise StartupError(
            f"cannot open the database {config.database_url}: {error.strerror or error}"
        ) from None
    return engine


def _make_sqlite_folder(url: str) -> None:
    # SQLite creates the file but not its folder (paths.data on a first start, say).
    file = sqlite_file(url)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
