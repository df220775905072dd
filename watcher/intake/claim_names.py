"""A claim's name in the in-progress area: its frame key, '=', its inbox path escaped.

    3f2c…a1=cam-07%2Fx.bmp     the frame key (uuid4().hex), then `cam-07/x.bmp`

In the path, '%' is written '%25' and '/' is written '%2F', so the name is one directory entry and
gives both back exactly (any bytes, non-UTF-8 ones included). See watcher.intake.claiming.
"""

from __future__ import annotations

import os
import re
from pathlib import PurePosixPath

KEY_SEPARATOR = b"="
_KEY_LENGTH = 32  # uuid4().hex
_ESCAPED = re.compile(rb"%(25|2F)")


def claimed_name(key: str, relative: PurePosixPath) -> bytes:
    """The claim's name in the area: the key, '=', the inbox-relative path escaped."""
    escaped = os.fsencode(str(relative)).replace(b"%", b"%25").replace(b"/", b"%2F")
    return os.fsencode(key) + KEY_SEPARATOR + escaped


def is_claimed_name(name: str, key: str, relative: PurePosixPath) -> bool:
    """Whether `name` (as the filesystem gave it) is claimed_name(key, relative), compared as text:
    the escapes replace ASCII characters, which encode byte for byte, so the text compares as
    the bytes would, without encoding both (a check made for every frame of every batch)."""
    return name == f"{key}={str(relative).replace('%', '%25').replace('/', '%2F')}"


def parse_claimed_name(name: str) -> tuple[str, PurePosixPath] | None:
    """(key, inbox-relative path) of a claim's name in the area; None for any other name.

    Only a name `claimed_name` could have written counts: anything else in the area (`a%2F%2Fb`,
    a lone `%`, `..%2Fx`: dropped there by hand, say) is no claim, so a path read back from a
    name can never point outside the inbox nor disagree with the name it came from.
    """
    raw = os.fsencode(name)
    if len(raw) <= _KEY_LENGTH + 1 or raw[_KEY_LENGTH : _KEY_LENGTH + 1] != KEY_SEPARATOR:
        return None
    key = raw[:_KEY_LENGTH].decode("ascii", "replace")
    if not is_key(key):
        return None
    unescaped = _ESCAPED.sub(lambda found: b"%" if found[1] == b"25" else b"/", raw[_KEY_LENGTH + 1 :])
    relative = PurePosixPath(os.fsdecode(unescaped))
    if not inside_inbox(relative) or claimed_name(key, relative) != raw:
        return None
    return key, relative


def is_key(name: str) -> bool:
    """Whether `name` is a frame key as `claim` makes them (uuid4().hex)."""
    return len(name) == _KEY_LENGTH and all(character in "0123456789abcdef" for character in name)


def inside_inbox(relative: PurePosixPath) -> bool:
    """Whether `relative` is a path the inbox's scan could have given: relative, not empty, and
    no part '.', '..' or hidden (the scan skips those)."""
    return (
        not relative.is_absolute()
        and bool(relative.parts)
        and not any(part.startswith(".") for part in relative.parts)
    )
