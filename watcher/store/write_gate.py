"""One writer at a time inside the process, on SQLite: the daemon's lanes queue for the write
lock here, where the next one goes the moment the last has committed.

SQLite lets one writer in and leaves the others in its busy handler, which sleeps 1, 2, 5, 10, 15,
20, 25 … 100 ms between tries: with several batches in flight, a commit could wait a hundred
milliseconds and more for a lock that was free after a few (bench/commits.py). Other processes (a
second daemon, the `db` commands) still meet the busy timeout at SQLite's own lock: a write whose
turn came late may then wait up to twice the busy timeout, the gate's wait and SQLite's, before
it is parked as locked. Reads on a writable engine begin IMMEDIATE too and do not pass the gate:
the daemon reads rarely while it writes (a batch whose rows were there already).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from weakref import WeakKeyDictionary

from sqlalchemy import Engine

from watcher.store.errors import StorageUnavailable


class WriteGate:
    """A re-entrant lock with the busy timeout's patience: a nested write of the same thread
    passes (and meets SQLite's own lock, as before), and a wait past the timeout is the same
    transient error as SQLite's "database is locked"."""

    def __init__(self, *, timeout_s: float) -> None:
        self._lock = threading.RLock()
        self._timeout_s = timeout_s

    @contextmanager
    def held(self) -> Iterator[None]:
        if not self._lock.acquire(timeout=self._timeout_s):
            raise StorageUnavailable(
                f"database is locked: this process's other writes held it for {self._timeout_s:g} s"
            )
        try:
            yield
        finally:
            self._lock.release()


_gates: WeakKeyDictionary[Engine, WriteGate] = WeakKeyDictionary()


def add_write_gate(engine: Engine, *, timeout_s: float) -> None:
    """From now on the engine's write transactions (watcher.store.session) take turns."""
    _gates[engine] = WriteGate(timeout_s=timeout_s)


def write_gate(engine: Engine) -> AbstractContextManager[None]:
    """Held around one write transaction: the engine's gate, or nothing for a server database."""
    gate = _gates.get(engine)
    return gate.held() if gate is not None else nullcontext()
