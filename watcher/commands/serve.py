"""`cctv-gender serve`: the web dashboard, review pages and JSON API, under uvicorn."""

from __future__ import annotations

import argparse
import logging
import socket

from watcher.commands.arguments import UsageError, add_config, non_empty_type
from watcher.commands.exit_codes import EXIT_OK
from watcher.config import Config, ConfigError
from watcher.config.listen import is_loopback, split_listen
from watcher.errors import StartupError
from watcher.store.opening import open_database

logger = logging.getLogger(__name__)

HELP = "the web dashboard, frame review and JSON API (config [web])"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config(parser)
    parser.add_argument(
        "--listen", type=non_empty_type, metavar="HOST:PORT", help="where to listen (default: web.listen)"
    )


def run(config: Config, args: argparse.Namespace) -> int:
    # The web stack only for this command, not for every start of the command line.
    import uvicorn

    from watcher.web.app import create_app
    from watcher.web.context import WebContext
    from watcher.web.security import Gate

    listen = args.listen or config.web.listen
    try:
        host, port = split_listen(listen)
    except ValueError as error:
        raise UsageError(f"--listen {listen}: {error}") from None
    if not is_loopback(host) and config.web.token is None:
        raise ConfigError(
            f"{config.source}: web.token: must be set to listen on {listen}, which is not a loopback address"
        )
    reader = open_database(config, migrate=False, read_only=True)
    writer = open_database(config, migrate=False)
    gate = Gate(token=config.web.token, token_name=config.web.token_name)
    app = create_app(WebContext(config=config, reader=reader, writer=writer, gate=gate), listen_host=host)
    try:
        listening = _bind(host, port)  # before uvicorn starts
    # A port in use, a name that does not resolve, or one the IDNA codec refuses (an empty label:
    # "cctv-box..lan", UnicodeError): one line naming it.
    except (OSError, UnicodeError) as error:
        given = "--listen" if args.listen else "web.listen"
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise StartupError(f"cannot listen on {given} {listen}: {reason}") from None
    server = uvicorn.Server(
        uvicorn.Config(app, log_config=None, access_log=False, proxy_headers=False, server_header=False)
    )
    logger.info("serving on http://%s/%s", listen, " (token required)" if gate.needs_login else "")
    try:
        server.run(sockets=[listening])
    finally:
        listening.close()
        reader.dispose()
        writer.dispose()
    return EXIT_OK


def _bind(host: str, port: int) -> socket.socket:
    family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    listening = socket.socket(family, kind, protocol)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind(address)
        listening.listen(128)
    except OSError:
        listening.close()
        raise
    return listening
