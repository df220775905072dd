"""systemd's service notification protocol (sd_notify), in the few lines the documentation gives:
datagrams of `KEY=value` lines sent to the socket named by $NOTIFY_SOCKET.

Without $NOTIFY_SOCKET (not under systemd, or `Type=simple`) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time

logger = logging.getLogger(__name__)


class SystemdNotifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # "@name" is a socket in the abstract namespace, spelled with a leading NUL byte.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        if self._address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.watchdog_interval_s = _watchdog_interval(env)
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, *lines: str) -> None:
        if self._socket is None:
            return
        try:
            self._socket.sendto("\n".join(lines).encode(), self._address)
        except OSError as error:
            logger.debug("cannot notify systemd: %s", error)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping: finishing the batch in hand")

    def watchdog_due(self) -> bool:
        """Whether a ping now would be sent: at most two per interval (systemd recommends half)."""
        interval = self.watchdog_interval_s
        return interval is not None and time.monotonic() - self._last_ping >= interval / 2

    def watchdog(self) -> None:
        """Ping the watchdog, when due."""
        if self.watchdog_due():
            self._last_ping = time.monotonic()
            self.send("WATCHDOG=1")


def _watchdog_interval(env: dict[str, str] | os._Environ[str]) -> float | None:
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000
    except ValueError:
        return None
