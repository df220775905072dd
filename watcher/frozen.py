"""Frozen dataclasses for what the daemon makes for every frame, without freezing's cost at run time.

A frozen dataclass's `__init__` sets each field through `object.__setattr__` (its own
`__setattr__` refuses): on the 2-core VM of 2026-11-28, a result row's 21 fields took 4.8 µs to
make frozen against 1.1 µs plain (timeit), for every frame, on threads that take the GIL in turn
(see bench/daemon_cpu.py: on a GPU that Python is what caps frames/s). A class made with
`frozen_when_checked` is frozen where that is checked, by the type checker: strict mypy in `make
lint` rejects any assignment to its fields in watcher/ and model/, where mypy looks. At run time
it is a plain dataclass, compared and hashed by its fields as a frozen one is. Code outside mypy's
sight (tests, bench/) must not assign to them either: a ClaimedFrame's cached paths would go stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, dataclass_transform

_T = TypeVar("_T")


@dataclass_transform(frozen_default=True)
def frozen_when_checked(cls: type[_T]) -> type[_T]:
    return dataclass(unsafe_hash=True)(cls)
