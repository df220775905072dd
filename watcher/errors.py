"""Errors that stop a command with a one-line message instead of a traceback."""


class StartupError(Exception):
    """Something outside the config file stops the daemon from starting; the message says what."""
