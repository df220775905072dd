"""`cctv-gender watch`: the daemon, until SIGTERM or SIGINT (SIGHUP reloads the head)."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from watcher.commands.arguments import add_config
from watcher.commands.exit_codes import EXIT_FAILURE, EXIT_OK
from watcher.config import Config
from watcher.errors import StartupStopped
from watcher.reports import RunReport
from watcher.service.signals import hold_reloads, ignore_stops, relay_signals, release_held
from watcher.store.errors import StorageError
from watcher.wording import plural

if TYPE_CHECKING:
    from watcher.pipeline.daemon import Daemon

logger = logging.getLogger(__name__)

HELP = "run the daemon: classify frames as they arrive"
# The collector stays off through start-up (see commands.command_line) until run() has built the daemon.
TURNS_COLLECTOR_ON = True
# The stop signals stay held from the command line's start (see commands.main) until run() relays them.
RELAYS_SIGNALS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config(parser)
    parser.add_argument(
        "--once",
        action="store_true",
        help="process what is in the inbox now, then exit (frames still being written are left)",
    )
    parser.add_argument(
        "--instance",
        default=None,
        metavar="NAME",
        help="this daemon's name among several sharing the inbox (default: first free <hostname>-N)",
    )


def run(config: Config, args: argparse.Namespace) -> int:
    hold_reloads()  # before anything starts: a SIGHUP during start-up must not end it
    stop = threading.Event()
    started: list[Daemon] = []  # the daemon once built: a stop wakes its loop

    def request_stop(received: signal.Signals) -> None:
        if started:
            logger.info("%s received: finishing the batch in hand, then exiting", received.name)
        else:
            logger.info("%s received while starting: stopping after the step in hand", received.name)
        stop.set()
        for daemon in started:
            daemon.wake()

    # From the very start, on a thread of their own: set from a signal handler, the loop's wake-up
    # event could wait for its own lock, held by the same thread (see watcher.service.signals). A
    # stop while the database migrates or the model loads ends the start after that step, cleanly.
    relay_signals(stop=request_stop)
    release_held()  # held since the command line began: a stop meanwhile is relayed now
    try:
        return _run(config, args, stop=stop, started=started, request_stop=request_stop)
    except StartupStopped as stopped:
        # Nothing was taken: every frame is where it was (the recovery's stop is the run's own).
        logger.info("stopped during start-up, %s", stopped)
        return EXIT_OK
    finally:
        ignore_stops()  # stopped: a second SIGTERM must not end the exit by the signal


def _run(
    config: Config,
    args: argparse.Namespace,
    *,
    stop: threading.Event,
    started: list[Daemon],
    request_stop: Callable[[signal.Signals], None],
) -> int:
    from watcher.pipeline.assembly import build_daemon
    from watcher.pipeline.file_workers import FileWorkersFailed

    daemon = build_daemon(config, stop=stop, instance_name=args.instance)
    started.append(daemon)
    # Start-up, run with the collector off, leaves hundreds of thousands of objects that live as
    # long as the daemon (torch, transformers, the model): out of the collector's sight, each full
    # collection stops walking them all again while frames wait. Its little garbage (some 13,000
    # objects, under 10 MB, no tensors) is frozen with them: collecting it first would cost about
    # half of what starting without the collector saves.
    gc.freeze()
    gc.enable()

    def request_reload() -> None:
        logger.info("SIGHUP received: reloading the head before the next batch")
        daemon.request_reload()

    relay_signals(stop=request_stop, reload=request_reload)
    try:
        report = daemon.run(once=args.once)
    except (OSError, StorageError) as error:
        # Not a user mistake: an I/O error (a failed fsync, say), a vanished output folder, a
        # database that failed for good. Exit non-zero; the next start recovers the frames left
        # in progress.
        logger.exception("stopping on a storage error: %s", error)
        return EXIT_FAILURE
    except FileWorkersFailed as error:
        logger.error("%s", error)  # noqa: TRY400 - the worker's own crash is the story, not this stack
        return EXIT_FAILURE
    return _said_stopped(report)


def _said_stopped(report: RunReport) -> int:
    """The run's end in the log; its exit code."""
    logger.info(
        "stopped: %s ok, %d failed in %s, %d recovered",
        plural(report.ok, "frame"),
        report.failed,
        plural(report.batches, "batch"),
        report.recovered,
    )
    if report.left_in_inbox:
        logger.warning(
            "%s left in the inbox for the next run: %s",
            plural(len(report.left_in_inbox), "frame"),
            ", ".join(report.left_in_inbox[:10]),
        )
    if report.left_parked:
        logger.error(
            "%s claimed: their batch could not be stored; the next run retries them",
            plural(report.left_parked, "frame stays", "frames stay"),
        )
        return EXIT_FAILURE
    return EXIT_OK
