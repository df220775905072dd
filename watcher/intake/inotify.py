"""Linux inotify, read directly: a descriptor, watches on folders, and its events parsed in bulk.

The daemon asks only for what says something (a file made, renamed in, or closed after writing;
a watched folder moving), so its own work (looking at frames, claiming them out of their folder,
moving them on) raises no events at all. Each read takes every queued event at once, parsed by
`parse_events`, with no thread or queue per event.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_ISDIR = 0x40000000
IN_CLOEXEC = 0o2000000
IN_NONBLOCK = 0o4000

# What a watched folder reports: files and folders made or renamed into it, files closed after
# writing, and the folder itself moved or deleted (its tree's watches are then checked again).
# Renames out of it (a claim) and reads (a header's look) are not asked for.
FOLDER_EVENTS = IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE | IN_MOVE_SELF | IN_DELETE_SELF
# A folder link is never followed, and only folders are watched.
_ADD_FLAGS = IN_ONLYDIR | IN_DONT_FOLLOW

_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)
# Room for thousands of events a read (each is 16 bytes and its padded name).
READ_BYTES = 1 << 20


@dataclass(frozen=True)
class Event:
    """One inotify event: the watch it came from (-1 for the queue's overflow), what happened, and
    the name in the watched folder (empty when about the folder itself)."""

    watch: int
    mask: int
    name: str

    @property
    def overflowed(self) -> bool:
        return bool(self.mask & IN_Q_OVERFLOW)

    @property
    def about_a_folder(self) -> bool:
        """A folder made or moved in, or a watched folder moved, deleted or unmounted (its watch's
        end, IN_IGNORED, follows those, or our own unwatching: it says nothing new)."""
        return bool(self.mask & (IN_ISDIR | IN_MOVE_SELF | IN_DELETE_SELF | IN_UNMOUNT))


def parse_events(data: bytes) -> Iterator[Event]:
    """The events in `data`, as read from an inotify descriptor: each a header and a name padded
    with NULs to its length. Names are decoded as the file system's other names are (os.fsdecode:
    bytes that are not UTF-8 survive as surrogates)."""
    offset, end = 0, len(data)
    while offset + _HEADER.size <= end:
        watch, mask, _cookie, length = _HEADER.unpack_from(data, offset)
        offset += _HEADER.size
        raw = data[offset : offset + length]
        offset += length
        yield Event(watch, mask, os.fsdecode(raw.split(b"\0", 1)[0]))


class InotifyUnavailable(OSError):
    """inotify cannot be used here (not Linux, or out of instances): events are then not seen."""


def _libc() -> ctypes.CDLL:
    name = ctypes.util.find_library("c")
    if name is None:
        raise InotifyUnavailable(errno.ENOSYS, "no C library found")
    return ctypes.CDLL(name, use_errno=True)


class Inotify:
    """An inotify descriptor: watches added and removed, events read."""

    def __init__(self) -> None:
        libc = _libc()
        try:
            self._add = libc.inotify_add_watch
            self._remove = libc.inotify_rm_watch
            init = libc.inotify_init1
        except AttributeError:
            raise InotifyUnavailable(errno.ENOSYS, "this system has no inotify") from None
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._remove.argtypes = [ctypes.c_int, ctypes.c_int]
        descriptor = init(IN_CLOEXEC | IN_NONBLOCK)
        if descriptor < 0:
            number = ctypes.get_errno()
            raise InotifyUnavailable(number, os.strerror(number))
        self.descriptor: int = descriptor

    def watch(self, folder: Path) -> int:
        """Watch `folder`; its watch descriptor (the same one again for a folder watched already,
        under whatever name it had then)."""
        watch = self._add(self.descriptor, os.fsencode(folder), FOLDER_EVENTS | _ADD_FLAGS)
        if watch < 0:
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number), str(folder))
        return int(watch)

    def unwatch(self, watch: int) -> None:
        self._remove(self.descriptor, watch)  # fails harmlessly if the kernel dropped it already

    def read(self) -> list[Event]:
        """Every event queued now (none if there are none)."""
        try:
            data = os.read(self.descriptor, READ_BYTES)
        except BlockingIOError:
            return []
        return list(parse_events(data))

    def close(self) -> None:
        os.close(self.descriptor)
