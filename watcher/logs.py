"""Logging setup for the command line: plain lines on stderr, without timestamps under systemd."""

from __future__ import annotations

import logging
import os
import sys


def configure_logging(level: str) -> None:
    # The journal stamps every line itself; JOURNAL_STREAM is set when stderr goes to it.
    under_journal = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = (
        "%(levelname)s %(name)s: %(message)s"
        if under_journal
        else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party libraries are chatty at info; keep them to warnings unless debugging ourselves.
    for noisy in ("watchdog", "alembic", "transformers", "urllib3", "filelock", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The hub logs each download retry twice (its own handler and ours); a failed load ends in
    # one clear error line of ours anyway.
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
