"""The one way into the database: a transaction or a read, with driver errors translated.

Modelled on MLflow's `SqlAlchemyStore.ManagedSessionMaker`: every statement of the project runs
inside one of these scopes, so `StorageUnavailable` / `StorageFailed` (watcher.store.errors) are
the only database exceptions a caller ever sees.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from watcher.store.errors import translate
from watcher.store.write_gate import write_gate


@contextmanager
def translated_errors() -> Iterator[None]:
    """Driver errors raised inside become StorageUnavailable or StorageFailed."""
    try:
        yield
    except DBAPIError as error:
        raise translate(error) from error


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction, committed on leaving (rolled back on an exception); on SQLite the
    process's writes take turns (watcher.store.write_gate)."""
    with write_gate(engine), translated_errors(), engine.begin() as connection:
        yield connection


@contextmanager
def orm_session(engine: Engine, *, write: bool = False) -> Iterator[Session]:
    """An ORM session; `write` commits it on leaving. Objects stay readable after it closes."""
    with translated_errors(), Session(engine, expire_on_commit=False) as session:
        if write:
            with write_gate(engine), session.begin():
                yield session
        else:
            yield session
