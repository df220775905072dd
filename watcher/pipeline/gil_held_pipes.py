"""Messages on the file workers' pipes, written and read without giving the GIL back.

Python gives the GIL back around every system call (`os.write`, `os.read`, `select`), and
taking it again waits, while another of the daemon's threads runs Python, until that thread is
made to drop it: up to the switch interval, 5 ms. A batch's hand-offs to its file workers were
four such calls a worker (the share's write, the wait for its answer, the answer's header and its
body), about sixty a batch of 128 on 15 workers, in each read, move and claim round; on a 16-core
GPU host a read of 128 frames that costs the workers ~5 ms took ~35 ms (`bench/daemon_cpu.py
--stand-in-gpu`, stage "read"; `bench/hand_offs.py` measures the hand-offs beside busy Python).

So the calls that need not wait are made through ctypes' `PyDLL`, which keeps the GIL: `poll`
with no timeout, and `send`/`recv` with MSG_DONTWAIT on the pipes (socket pairs, as
multiprocessing makes them with duplex=True). A call that would have to wait (the worker's side
of the pipe full, or the rest of an answer not written yet: the worker descheduled on a busy
host) is made again the usual way, giving the GIL back while it waits: holding it then would
stall every thread of the daemon behind one worker. A batch thus gives the GIL back about once a
round of answers, to wait for them.

The framing is multiprocessing.Connection's (a 4-byte big-endian length, or -1 and an 8-byte
one), so a worker's end stays a plain Connection.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

_POLLIN = 0x001
_MSG_DONTWAIT = 0x40  # Linux's values
_MSG_NOSIGNAL = 0x4000
_WOULD_WAIT = (errno.EAGAIN, errno.EWOULDBLOCK)

_libc = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the GIL stays held through each call
_send = _libc.send
_send.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_send.restype = ctypes.c_ssize_t
_recv = _libc.recv
_recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_recv.restype = ctypes.c_ssize_t
_poll = _libc.poll
_poll.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int]
_poll.restype = ctypes.c_int


class _PollFd(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_short), ("revents", ctypes.c_short)]


def send_message(fd: int, payload: bytes | bytearray | memoryview) -> None:
    """`payload` framed and written whole to `fd`, a socket (OSError, EPIPE, if its reader is gone)."""
    size = len(payload)
    header = struct.pack("!i", size) if size <= 0x7FFFFFFF else struct.pack("!iQ", -1, size)
    data = header + payload
    address = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
    assert address is not None, "bytes have a buffer"
    sent = 0
    while sent < len(data):
        count = _send(fd, address + sent, len(data) - sent, _MSG_DONTWAIT | _MSG_NOSIGNAL)
        if count < 0:
            if _would_wait():
                sent += os.write(fd, memoryview(data)[sent:])  # waits for room, the GIL given back
            continue
        sent += count


def receive_message(fd: int) -> bytearray:
    """One framed message from `fd`, a socket; EOFError if the writer closed it before a message
    began, OSError if it closed it within one."""
    (size,) = struct.unpack("!i", _read_exactly(fd, 4, at_start=True))
    if size == -1:
        (size,) = struct.unpack("!Q", _read_exactly(fd, 8))
    return _read_exactly(fd, size)


def ready(fds: list[int]) -> list[int]:
    """Those of `fds` that can be read now (a message there, or the writer gone), without waiting."""
    polled = (_PollFd * len(fds))(*(_PollFd(fd, _POLLIN, 0) for fd in fds))
    while _poll(ctypes.addressof(polled), len(fds), 0) < 0:
        _would_wait()  # raises unless interrupted (EINTR): then again
    return [entry.fd for entry in polled if entry.revents]


def _read_exactly(fd: int, size: int, *, at_start: bool = False) -> bytearray:
    buffer = bytearray(size)
    if size == 0:
        return buffer
    window = (ctypes.c_char * size).from_buffer(buffer)  # held: the address is valid while it is
    address = ctypes.addressof(window)
    got = 0
    while got < size:
        count = _recv(fd, address + got, size - got, _MSG_DONTWAIT)
        if count < 0:
            if _would_wait():
                count = os.readv(fd, [memoryview(buffer)[got:]])  # waits, the GIL given back
            else:
                continue
        if count == 0:
            if at_start and got == 0:
                raise EOFError
            raise OSError("got end of file during message")
        got += count
    del window
    return buffer


def _would_wait() -> bool:
    """After a failed call: True if it would have had to wait, False if a signal interrupted it
    (to be made again); any other error raised as OSError."""
    code = ctypes.get_errno()
    if code in _WOULD_WAIT:
        return True
    if code == errno.EINTR:
        return False
    raise OSError(code, os.strerror(code))
