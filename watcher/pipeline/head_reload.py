"""Switching the served head while the daemon runs: on a promotion (the registry's `current`
pointer changes) or on SIGHUP. A head that fails to load leaves the old one serving."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from model.heads import Head
from model.keras_head import KerasBackendError
from model.registry import RegistryError, current_version
from model.runtime import ModelLoadError

logger = logging.getLogger(__name__)


class HeadReloader:
    def __init__(self, registry: Path, *, load: Callable[[], Head]) -> None:
        self._registry = registry
        self._load = load
        self._pointer_seen = current_version(registry)
        self._unreadable: str | None = None  # why the pointer could not be read, once said

    def check(self, *, serving: Head, force: bool = False) -> Head | None:
        """A newly loaded head if the pointer moved (or `force`), else None. A pointer that cannot
        be read (hand-edited, a folder) leaves the serving head as it is, said once."""
        try:
            pointer = current_version(self._registry)
        except RegistryError as error:  # current_version says every OSError as one
            if force or str(error) != self._unreadable:  # a SIGHUP is always answered
                self._unreadable = str(error)
                logger.error("keeping head %s: cannot read which head to serve: %s", serving.version, error)
            return None
        self._unreadable = None
        if not force and pointer == self._pointer_seen:
            return None
        self._pointer_seen = pointer
        try:
            head = self._load()
        except (RegistryError, ModelLoadError, KerasBackendError, OSError, ValueError) as error:
            logger.error("keeping head %s: the new head cannot be loaded: %s", serving.version, error)
            return None
        if head.version != serving.version:
            logger.info("switched head from %s to %s", serving.version, head.version)
        return head
