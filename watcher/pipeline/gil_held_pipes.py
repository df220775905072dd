"""Messages on the file workers' pipes, written and read without giving the GIL back.

Python gives the GIL back around every system call (`os.write`, `os.read`, `select`), and
taking it again waits, while another of the daemon's threads runs Python, until that thread is
made to drop it: up to the switch interval, 5 ms. A batch's hand-offs to its file workers were
four such calls a worker (the share's write, the wait for its answer, the answer's header and its
body), sixty a batch of 128 on 15 workers, each read, move and claim round; on a 16-core GPU host,
with the daemon's other threads busy, a read of 128 frames that costs the workers ~5 ms took
~35 ms (`bench/daemon_cpu.py --stand-in-gpu`, stage "read"). These calls cannot block for long (a
share is written into an idle worker's empty pipe; an answer is read once `poll` has said it is
there), so they are made through ctypes' `PyDLL`, which keeps the GIL: a batch gives it back only
to wait, once per round of answers. A message past `LARGE_MESSAGE` (pictures decoded by Pillow
come back through the pipe) is read the usual way, the GIL given back: it takes long enough to
let the other threads run.

The framing is multiprocessing.Connection's (a 4-byte big-endian length, or -1 and an 8-byte
one), so a worker's end stays a plain Connection.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

# Past this, a message is read with the GIL given back (see the module's docstring).
LARGE_MESSAGE = 1 << 20

_POLLIN = 0x001
_libc = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the GIL stays held through each call
_write = _libc.write
_write.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
_write.restype = ctypes.c_ssize_t
_read = _libc.read
_read.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
_read.restype = ctypes.c_ssize_t
_poll = _libc.poll
_poll.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int]
_poll.restype = ctypes.c_int


class _PollFd(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_short), ("revents", ctypes.c_short)]


def send_message(fd: int, payload: bytes | bytearray | memoryview) -> None:
    """`payload` framed and written whole to `fd` (a pipe: raises OSError, EPIPE, if its reader is gone)."""
    size = len(payload)
    header = struct.pack("!i", size) if size <= 0x7FFFFFFF else struct.pack("!iQ", -1, size)
    data = header + payload
    address = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
    assert address is not None, "bytes have a buffer"
    sent = 0
    while sent < len(data):
        written = _write(fd, address + sent, len(data) - sent)
        if written < 0:
            _raise_unless_interrupted()
            continue
        sent += written


def receive_message(fd: int) -> bytes | bytearray:
    """One framed message from `fd`; EOFError if the writer closed it before a message began,
    OSError if it closed it within one."""
    (size,) = struct.unpack("!i", _read_exactly(fd, 4, at_start=True))
    if size == -1:
        (size,) = struct.unpack("!Q", _read_exactly(fd, 8))
    if size > LARGE_MESSAGE:
        return _read_releasing(fd, size)
    return _read_exactly(fd, size)


def ready(fds: list[int]) -> list[int]:
    """Those of `fds` that can be read now (a message there, or the writer gone), without waiting."""
    polled = (_PollFd * len(fds))(*(_PollFd(fd, _POLLIN, 0) for fd in fds))
    while _poll(ctypes.addressof(polled), len(fds), 0) < 0:
        _raise_unless_interrupted()
    return [entry.fd for entry in polled if entry.revents]


def _read_exactly(fd: int, size: int, *, at_start: bool = False) -> bytearray:
    buffer = bytearray(size)
    if size == 0:
        return buffer
    window = (ctypes.c_char * size).from_buffer(buffer)  # held: the address is valid while it is
    address = ctypes.addressof(window)
    got = 0
    while got < size:
        count = _read(fd, address + got, size - got)
        if count < 0:
            _raise_unless_interrupted()
            continue
        if count == 0:
            if at_start and got == 0:
                raise EOFError
            raise OSError("got end of file during message")
        got += count
    return buffer


def _read_releasing(fd: int, size: int) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        count = os.readv(fd, [view[got:]])
        if count == 0:
            raise OSError("got end of file during message")
        got += count
    return buffer


def _raise_unless_interrupted() -> None:
    code = ctypes.get_errno()
    if code != errno.EINTR:
        raise OSError(code, os.strerror(code))
