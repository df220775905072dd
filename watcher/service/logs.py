"""Logging setup for the command line: plain lines on stderr; under systemd, no timestamps (the
journal adds its own) and a `<N>` syslog priority prefix that journald turns into the priority."""

from __future__ import annotations

import logging
import os
import sys

# Python level → syslog priority (journald's SyslogLevelPrefix reads "<N>" at the line start).
SYSLOG_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class JournalFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = SYSLOG_PRIORITY.get(record.levelno, 6)
        # Every line of a traceback gets the prefix too, so it keeps its priority in the journal.
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())


def stderr_is_journal() -> bool:
    """Whether stderr is the journal stream systemd names in $JOURNAL_STREAM (`device:inode`).
    Every child inherits the variable (a shell in a terminal that a systemd service started, a
    command run by a unit's script with stderr to a file), so it alone proves nothing: stderr
    must be that very stream (systemd.exec(5), "$JOURNAL_STREAM")."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        status = os.fstat(sys.stderr.fileno())
        return (status.st_dev, status.st_ino) == (int(device), int(inode))
    except (AttributeError, OSError, ValueError):  # no stderr, one without a descriptor, no variable
        return False


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal():
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party libraries are chatty at info; keep them to warnings unless debugging ourselves.
    for noisy in ("alembic", "transformers", "urllib3", "filelock", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The hub logs each download retry twice (its own handler and ours); a failed load ends in
    # one clear error line of ours anyway.
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
