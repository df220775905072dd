"""The registry's lock: what changes the `current` pointer or the history (a training run from
its comparison to its promotion, `models promote`, `models rollback`) holds it, so two of them
never interleave and a head is never promoted over one it was not compared with. A version's
registration holds it too (see model.registry.register_version)."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# The registries this process holds the lock of, and the thread holding each (it may take it again).
_holders: dict[Path, int] = {}


@contextmanager
def registry_lock(registry: Path) -> Iterator[None]:
    """Hold `registry`'s lock (an flock on its folder, made if missing) for the block: another
    process or thread waits; the thread that holds it may take it again."""
    registry.mkdir(parents=True, exist_ok=True)
    key = registry.resolve()
    if _holders.get(key) == threading.get_ident():
        yield
        return
    descriptor = os.open(key, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        _holders[key] = threading.get_ident()
        try:
            yield
        finally:
            del _holders[key]
    finally:
        os.close(descriptor)  # releases the lock
