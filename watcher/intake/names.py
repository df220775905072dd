"""File names as text a database can store, and destinations that always fit the filesystem.

A frame's name is whatever bytes its exporter wrote: a Windows exporter writing Latin-1 gives names
that are not UTF-8, which neither SQLite nor PostgreSQL text can hold. Such a name is stored with
each byte that is not UTF-8 written as `\\xNN` (Python's `backslashreplace`) and each backslash
doubled (so a name that really contains the characters `\\xe9` stays another name), and the
frame's file in `processed/` or `failed/` gets that same text as its name, so `stored_path` finds
the file exactly.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

NAME_MAX_BYTES = 255
# Linux's PATH_MAX counts the terminating NUL.
PATH_MAX_BYTES = 4096 - 1
# What a destination may take of it: room is left for a numbered suffix (`-12`).
_DESTINATION_MAX_BYTES = PATH_MAX_BYTES - 16

_ESCAPE = re.compile(rb"\\(\\|x[0-9a-f]{2})")


def storable(text: str | PurePosixPath) -> str:
    """`text` with every byte that is not UTF-8 written as `\\xNN` and `\\` doubled."""
    text = str(text)
    if _plain(text):
        return text  # what nearly every camera writes, and the daemon's hot path
    return os.fsencode(text).replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def _plain(text: str) -> bool:
    """ASCII without a backslash: its own storable text (an undecodable byte is a lone surrogate
    in a str, never ASCII)."""
    return text.isascii() and "\\" not in text


def original_bytes(stored: str) -> bytes:
    """The bytes of a name `storable` wrote."""

    def unescape(match: re.Match[bytes]) -> bytes:
        escaped = match.group(1)
        return b"\\" if escaped == b"\\" else bytes([int(escaped[1:], 16)])

    return _ESCAPE.sub(unescape, stored.encode("utf-8"))


def fit_name(name: str, *, limit: int = NAME_MAX_BYTES) -> str:
    """`name` shortened (its stem, keeping the suffix) to at most `limit` bytes of UTF-8."""
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) <= limit:
        return name
    stem, dot, suffix = name.rpartition(".")
    if not dot or len(suffix.encode("utf-8", "surrogateescape")) > 16:
        stem, suffix = name, ""
    tail = f".{suffix}" if suffix else ""
    room = limit - len(tail.encode("utf-8", "surrogateescape"))
    return stem.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore") + tail


def destination_relative(relative: PurePosixPath) -> PurePosixPath:
    """Where under `processed/` or `failed/` a frame goes: its inbox path as storable text, each
    part shortened to fit NAME_MAX (escaping can make a name up to four times longer)."""
    parts = relative.parts
    if _plain(str(relative)) and all(len(part) <= NAME_MAX_BYTES for part in parts):
        return relative  # each part its own storable text, and short enough already
    return PurePosixPath(*(fit_name(storable(part)) for part in parts))


def flat_name(key: str, relative: PurePosixPath) -> str:
    """A name directly in the output folder, for a frame whose own path cannot be made there (too
    long, or a file where its camera folder should be): the frame key, then its file name."""
    return fit_name(f"{key}-{storable(relative.name)}")


def fits(path: str | Path) -> bool:
    """Whether `path` is short enough to be created (with room for a numbered suffix)."""
    return len(os.fsencode(path)) <= _DESTINATION_MAX_BYTES
