"""Connecting to the results database: the engine and its per-connection settings."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.engine import URL

from watcher.store.pg_service import service_settings
from watcher.store.write_gate import add_write_gate


def shown_url(url: str | URL) -> str:
    """The URL as it may be printed (a journal, a terminal): its password hidden, written before
    the host or as a `password=` parameter (libpq takes either)."""
    parsed = make_url(url)
    query = {key: "***" if _secret(key) else value for key, value in parsed.query.items()}
    return parsed.set(query=query).render_as_string(hide_password=True)


def _secret(parameter: str) -> bool:
    # password, sslpassword (a client key's passphrase), passwd (MySQL's)
    return "password" in parameter.lower() or parameter.lower() == "passwd"


def sqlite_file(url: str | URL) -> Path | None:
    """The file a SQLite URL names (also in URI form, `sqlite:///file:/path?uri=true`), or None
    for another database or an in-memory one. Raises ArgumentError for a URL that is not one."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or database in (None, "", ":memory:"):
        return None
    assert database is not None
    if parsed.query.get("uri") == "true" or database.startswith("file:"):
        # `file:name?mode=memory&uri=true` (or `vfs=memdb`, or either inside the name, percent-
        # encoded: the URL decodes it into the name): in memory, whatever its name.
        inner = parse_qs(database.partition("?")[2])
        in_memory = "memory" in (parsed.query.get("mode"), *inner.get("mode", []))
        in_memory |= "memdb" in (parsed.query.get("vfs"), *inner.get("vfs", []))
        if database.startswith("file:") and in_memory:
            return None
        database = database.removeprefix("file:").partition("?")[0]
        if database in ("", ":memory:"):
            return None
    return Path(database)


# libpq's own defaults wait for ever: a server that takes the connection and never answers (a
# stopped host behind a live pooler, a SYN-queued port), or a peer lost mid-query, would hold the
# daemon's loop thread (and its SIGTERM) until the kernel gives up, ~15 minutes later.
LIBPQ_TIMEOUTS: dict[str, int] = {
    "connect_timeout": 10,  # seconds, the whole connection's start included
    "keepalives": 1,
    "keepalives_idle": 30,  # a silent peer is given up after 30 + 3 × 10 s
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,  # ms: data sent and not acknowledged
}
# The environment variables libpq reads for the parameters above (the others have none).
LIBPQ_ENVIRONMENT = {"connect_timeout": "PGCONNECT_TIMEOUT", "application_name": "PGAPPNAME"}


def libpq_defaults(url: URL, *, environment: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """What the daemon sets for a PostgreSQL connection, short of what the operator set: a
    parameter given here outranks libpq's own sources, so one that the URL's query names, its
    environment variable, or a named service's pg_service.conf entry sets is left to them (the
    entry's connect_timeout is handed over: psycopg 3 would not read it, see pg_service)."""
    if url.get_backend_name() != "postgresql":
        return {}
    libpq = url.get_driver_name() in ("psycopg", "psycopg2")
    wanted: dict[str, Any] = {"application_name": "cctv-gender"} | (LIBPQ_TIMEOUTS if libpq else {})
    if not libpq:
        return {key: value for key, value in wanted.items() if key not in url.query}
    service = _query_value(url, "service") or environment.get("PGSERVICE")
    from_service = (
        service_settings(service, service_file=_query_value(url, "servicefile"), environment=environment)
        if service
        else {}
    )
    from_environment = {key for key, variable in LIBPQ_ENVIRONMENT.items() if variable in environment}
    operators = set(url.query) | from_service.keys() | from_environment
    given = {key: value for key, value in wanted.items() if key not in operators}
    if "connect_timeout" in from_service and "connect_timeout" not in url.query:
        given["connect_timeout"] = from_service["connect_timeout"]
    return given


def _query_value(url: URL, key: str) -> str | None:
    value = url.query.get(key)
    return value if value is None or isinstance(value, str) else None  # given twice: libpq refuses it anyway


def make_engine(url: str, *, busy_timeout_ms: int, read_only: bool = False) -> Engine:
    """An engine for `url`; SQLite gets WAL, synchronous=FULL, a busy timeout, BEGIN IMMEDIATE
    and, but read-only, a write gate (watcher.store.write_gate: the process's writes take turns).

    Other servers (PostgreSQL) get a connection check on checkout, so a restarted server costs a
    reconnect instead of an error, and a name that shows in pg_stat_activity.

    `read_only` is for commands that only read (`results`, `summary`, `status`, the source of
    `db copy`): writes are refused, and on SQLite transactions start deferred, so a reader left
    open (an export piped into `less`) holds a WAL snapshot and never the daemon's write lock.
    """
    if not url.startswith("sqlite"):
        connect_args = libpq_defaults(make_url(url))
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

    if not read_only:
        add_write_gate(engine, timeout_s=busy_timeout_ms / 1000)
    return engine
