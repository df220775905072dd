"""HOST:PORT, the one way web.listen, metrics.listen and `serve --listen` name where to listen."""

from __future__ import annotations

import ipaddress

# What the messages show for each: the default of web.listen, the port Prometheus exporters use.
WEB_EXAMPLE = "127.0.0.1:8600"
METRICS_EXAMPLE = "127.0.0.1:9464"


def split_listen(listen: str, *, example: str = WEB_EXAMPLE) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 in brackets) as (host, port); ValueError naming the rule, with `example`."""
    if any(character.isspace() for character in listen):
        # " 127.0.0.1:8600" named no loopback address, and then asked for web.token instead.
        raise ValueError(f"must be HOST:PORT with no space in it, like {example}")
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"must be HOST:PORT, like {example}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False
