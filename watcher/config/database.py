"""The `[database]` section. A relative SQLite path in `database.url` resolves against the config
file's folder, like every other path, instead of against whatever folder a command started in."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, ValidationInfo
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from watcher.config.base import OptionalText, Section, refuse_home, resolve, source_of


def refuse_unencoded_at(url: str) -> None:
    """ValueError for a server URL whose user name or password holds a bare `@`: the URL would be
    split at it, and the rest of the password printed as the host in every error."""
    scheme, _, rest = url.partition("://")
    if scheme.startswith("sqlite"):
        return  # no user or password; a path may hold an `@`
    before_query = rest.partition("?")[0]
    if before_query[: before_query.rfind("@")].count("@"):
        raise ValueError("its user name or password holds an `@`: write it as %40")


def _resolve_sqlite_path(url: str | None, info: ValidationInfo) -> str | None:
    source = source_of(info)
    if url is None or source is None:
        return url
    refuse_unencoded_at(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url  # opening the database reports it, naming database.url
    except ValueError:  # its text (a password's tail, say) is not printed back
        raise ValueError("not a URL that can be read (is its port a number?)") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        # Each connection would get its own empty database: rows written, then never seen.
        raise ValueError("an in-memory SQLite database keeps nothing: name a file")
    if parsed.get_backend_name() == "sqlite" and parsed.database is not None:
        refuse_home(parsed.database)
    return sqlite_path_from(url, folder=source.folder)


def sqlite_path_from(url: str, *, folder: Path) -> str:
    """`url` with a relative SQLite path made absolute against `folder` (SQLite would take it
    from whatever folder the process runs in); any other URL as it is. ArgumentError for a URL
    that is not one, ValueError for one whose port is not a number, or a path that cannot resolve."""
    parsed = make_url(url)
    database = parsed.database
    if (
        parsed.get_backend_name() != "sqlite"
        or database in (None, "", ":memory:")
        or database.startswith("file:")  # a SQLite URI (uri=true): left as written
        or Path(database).is_absolute()
    ):
        return url
    resolved = parsed.set(database=str(resolve(folder, Path(database))))
    return resolved.render_as_string(hide_password=False)


class DatabaseConfig(Section):
    """Where results are stored."""

    url: Annotated[OptionalText, AfterValidator(_resolve_sqlite_path)] = Field(
        None,
        description="A SQLAlchemy URL; not set means a SQLite file at <paths.data>/results.sqlite3. "
        "A relative SQLite path (sqlite:///results.db) resolves against this file's folder, like "
        "the paths above. Several daemons share one PostgreSQL database "
        "(postgresql+psycopg://user@host/db).",
    )
    busy_timeout_ms: int = Field(
        10_000,
        ge=0,
        # A C int in both: SQLite took a larger one as 0 (no wait at all), PostgreSQL's
        # lock_timeout refused it at every connection.
        le=2**31 - 1,
        description="How long a writer waits for a locked SQLite database (for its turn among this "
        "process's writes, then for another process's); on PostgreSQL, the lock_timeout. Past it "
        "the batch is parked and retried.",
    )
    store_embeddings: bool = Field(
        True,
        description="Keep each frame's CLIP embedding (float16, 1 KiB for ViT-B/32) in the "
        "`embedding` column, so `cctv-gender rescore` can re-classify old rows with a new head "
        "without running CLIP again.",
    )
