"""Errors that stop a command with a one-line message instead of a traceback, and the stop
signal that ends a daemon still starting (exit 0, one line)."""

from __future__ import annotations

import threading


class StartupError(Exception):
    """Something outside the config file stops the daemon from starting; the message says what."""


class StartupStopped(Exception):
    """A stop signal came while the daemon started: it ends cleanly (exit 0) after the step in
    hand, before taking anything. The message names that step."""


def raise_if_stopped(stop: threading.Event, where: str) -> None:
    """StartupStopped, saying `where` ("after the model load"), once `stop` is set."""
    if stop.is_set():
        raise StartupStopped(where)
