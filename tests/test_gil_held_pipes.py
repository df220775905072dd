"""Messages on the file workers' pipes without giving the GIL back (watcher.pipeline.gil_held_pipes):
the same framing as multiprocessing.Connection both ways, its ends of file told apart, and the
GIL kept through each call (another thread cannot run meanwhile; a wait lets it)."""

from __future__ import annotations

import ctypes
import errno
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.pipeline import gil_held_pipes
from watcher.pipeline.gil_held_pipes import ready, receive_message, send_message


@pytest.fixture
def pipe() -> Iterator[tuple[Connection, Connection]]:
    ours, theirs = multiprocessing.get_context("spawn").Pipe(duplex=True)  # as the file workers' are
    yield ours, theirs
    ours.close()
    theirs.close()


def _echo(connection: Connection) -> None:
    """A process that sends back every message it gets, as a Connection does, until b"stop"."""
    while (message := connection.recv_bytes()) != b"stop":
        connection.send_bytes(message)


@pytest.fixture(scope="module")
def echo() -> Iterator[Connection]:
    """Our end of a pipe to `_echo` in a process of its own: a writer that keeps the GIL waits for
    its reader when the message is larger than the pipe's buffer, so the reader cannot be one of
    this process's threads (a file worker is a process too)."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe(duplex=True)
    process = context.Process(target=_echo, args=(theirs,), daemon=True)
    process.start()
    theirs.close()
    yield ours
    ours.send_bytes(b"stop")
    process.join(10)
    ours.close()


# Small ones, ones either side of 16 KiB (where a Connection writes its header apart), and ones
# past a socket pair's buffer (~208 KiB: read while they are written, in several calls).
_SIZES = st.one_of(
    st.integers(0, 300), st.integers(16_380, 16_390), st.integers(200_000, 600_000), st.just(3 << 20)
)


@settings(max_examples=40, deadline=None)
@given(size=_SIZES, seed=st.integers(0, 255))
def test_a_message_sent_here_comes_back_whole_through_a_connection(
    echo: Connection, size: int, seed: int
) -> None:
    payload = bytes((seed + index) % 256 for index in range(size))
    send_message(echo.fileno(), payload)  # read there by Connection.recv_bytes, sent back by send_bytes
    assert echo.recv_bytes() == payload


@settings(max_examples=40, deadline=None)
@given(size=_SIZES, seed=st.integers(0, 255))
def test_a_message_a_connection_sends_is_received_whole_here(echo: Connection, size: int, seed: int) -> None:
    payload = bytes((seed * 7 + index) % 256 for index in range(size))
    echo.send_bytes(payload)
    assert bytes(receive_message(echo.fileno())) == payload


def _ends_within(seconds: float, work: Callable[[], object]) -> bool:
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


def test_a_message_past_the_buffer_waits_for_a_reader_in_this_process_with_the_gil_given_back(
    pipe: tuple[Connection, Connection],
) -> None:
    # Kept through a wait for room, the GIL would stop the reader thread: a deadlock.
    ours, theirs = pipe
    payload = bytes(range(256)) * 8192  # 2 MiB, several times a socket pair's buffer
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(theirs.recv_bytes()), daemon=True)
    reader.start()
    assert _ends_within(30, lambda: send_message(ours.fileno(), payload))
    reader.join(30)
    assert received == [payload]


def test_an_answer_still_being_written_by_a_thread_of_this_process_is_waited_for_with_the_gil_given_back(
    pipe: tuple[Connection, Connection],
) -> None:
    ours, theirs = pipe
    payload = bytes(range(256)) * 8192
    writer = threading.Thread(target=lambda: theirs.send_bytes(payload), daemon=True)
    writer.start()
    got: list[bytes] = []
    assert _ends_within(30, lambda: got.append(bytes(receive_message(ours.fileno()))))
    writer.join(30)
    assert got == [payload]


def test_messages_in_a_row_stay_apart(pipe: tuple[Connection, Connection]) -> None:
    ours, theirs = pipe
    for payload in (b"", b"a", b"bc" * 1000):
        send_message(ours.fileno(), payload)
    assert [theirs.recv_bytes() for _ in range(3)] == [b"", b"a", b"bc" * 1000]


def test_a_writer_gone_before_a_message_is_eof_and_within_one_an_error(
    pipe: tuple[Connection, Connection],
) -> None:
    ours, theirs = pipe
    theirs.close()
    with pytest.raises(EOFError):
        receive_message(ours.fileno())
    left, right = multiprocessing.get_context("spawn").Pipe(duplex=True)
    with left:
        os.write(right.fileno(), (100).to_bytes(4, "big") + b"only part")  # promised 100 bytes
        right.close()
        with pytest.raises(OSError, match="end of file during message"):
            receive_message(left.fileno())


def test_writing_to_a_reader_that_is_gone_raises_oserror(pipe: tuple[Connection, Connection]) -> None:
    ours, theirs = pipe
    theirs.close()
    with pytest.raises(OSError) as raised:
        send_message(ours.fileno(), b"to no one")
    assert raised.value.errno == errno.EPIPE  # the file workers tell a worker's death by it


def test_ready_names_the_pipes_with_a_message_or_a_writer_gone() -> None:
    context = multiprocessing.get_context("spawn")
    pipes = [context.Pipe(duplex=True) for _ in range(3)]
    try:
        fds = [ours.fileno() for ours, _ in pipes]
        assert ready(fds) == []
        pipes[1][1].send_bytes(b"answer")
        pipes[2][1].close()
        assert ready(fds) == [fds[1], fds[2]]
        assert receive_message(fds[1]) == b"answer"
        assert ready(fds) == [fds[2]]
    finally:
        for ours, theirs in pipes:
            ours.close()
            theirs.close()


def _other_thread_ran_during(call: Callable[[], object]) -> bool:
    """Whether a thread that wants the GIL ran while `call` ran. The switch interval is made so
    long that this thread keeps the GIL unless `call` gives it back; a short release may be taken
    back before the other thread wakes, so only a call that waits is sure to show."""
    counter = [0]
    stop = threading.Event()

    def take_turns() -> None:
        while not stop.is_set():
            counter[0] += 1
            os.sched_yield()  # a system call: gives the GIL back to whoever waits for it

    interval = sys.getswitchinterval()
    sys.setswitchinterval(100.0)
    try:
        other = threading.Thread(target=take_turns)
        other.start()
        before = counter[0]
        call()
        after = counter[0]
        stop.set()
        other.join()
    finally:
        sys.setswitchinterval(interval)
    return after != before


def test_the_gil_is_kept_through_sending_polling_and_receiving(pipe: tuple[Connection, Connection]) -> None:
    # What keeps it: the C functions are called as Python API ones (ctypes.PyDLL), which keep the
    # GIL. A plain CDLL's give it back, and the check below is only sure to see a long release.
    for function in (gil_held_pipes._send, gil_held_pipes._recv, gil_held_pipes._poll):  # noqa: SLF001
        assert function._flags_ & ctypes._FUNCFLAG_PYTHONAPI  # noqa: SLF001
    ours, theirs = pipe
    theirs.send_bytes(b"an answer waiting")
    assert not _other_thread_ran_during(lambda: ready([ours.fileno()]))
    assert not _other_thread_ran_during(lambda: receive_message(ours.fileno()))
    assert not _other_thread_ran_during(lambda: send_message(ours.fileno(), b"a share"))
    assert theirs.recv_bytes() == b"a share"
    # The check can fail: a call that gives the GIL back for a while lets the other thread run.
    assert _other_thread_ran_during(lambda: ours.poll(0.05))
