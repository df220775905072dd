"""The `cctv-gender` command line (also `python -m watcher`)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType

from sqlalchemy.exc import DBAPIError

from watcher.commands import queries as query_commands
from watcher.commands.queries import add_filter_arguments, check_filter_arguments
from watcher.config import Config, ConfigError, find_config, load_config
from watcher.errors import StartupError
from watcher.service.logs import configure_logging

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cctv-gender",
        description="Classify perceived gender in CCTV frames dropped into an inbox folder.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_config(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--config",
            type=Path,
            default=None,
            metavar="PATH",
            help="config file (default: ./config.toml, then /etc/cctv-gender/config.toml)",
        )

    watch = commands.add_parser("watch", help="run the daemon: classify frames as they arrive")
    add_config(watch)
    watch.add_argument(
        "--once",
        action="store_true",
        help="process what is in the inbox now, then exit (frames still being written are left)",
    )
    watch.add_argument(
        "--instance",
        default=None,
        metavar="NAME",
        help="this daemon's name among several sharing the inbox (default: first free <hostname>-N)",
    )

    results = commands.add_parser("results", help="result rows, newest first, filtered; tables or exports")
    add_config(results)
    add_filter_arguments(results, time_type=_time, probability_type=_probability)
    results.add_argument(
        "--limit",
        type=_positive_int,
        default=None,
        help="at most N rows (default: 20 for a table, all for exports)",
    )

    summary = commands.add_parser("summary", help="counts per camera and per hour or day, with shares")
    add_config(summary)
    add_filter_arguments(summary, time_type=_time, probability_type=_probability)
    summary.add_argument(
        "--by",
        type=_dimensions,
        default=("camera",),
        metavar="DIMS",
        help="comma-separated: camera, hour, day (default camera); times are UTC",
    )
    summary.add_argument("--plot", metavar="FILE.png", help="also draw the counts over time per camera")

    status = commands.add_parser(
        "status", help="is the daemon running and keeping up (exit 1 when unhealthy, for monitoring)"
    )
    add_config(status)
    status.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )

    train = commands.add_parser(
        "train", help="train a new head on a labelled folder, evaluate, maybe promote"
    )
    add_config(train)
    train.add_argument(
        "--data", type=Path, required=True, metavar="DIR", help="folder with FEMALE/ and MALE/"
    )
    train.add_argument(
        "--promote",
        choices=("auto", "never", "force"),
        default="auto",
        help="auto (default): only if it beats the current head and zero-shot on the test split",
    )
    train.add_argument(
        "--seed", type=int, default=None, help="split and training seed (default training.seed)"
    )

    evaluate = commands.add_parser(
        "evaluate", help="metrics of a head on a labelled folder, without training"
    )
    add_config(evaluate)
    evaluate.add_argument(
        "--data", type=Path, required=True, metavar="DIR", help="folder with FEMALE/ and MALE/"
    )
    evaluate.add_argument(
        "--model",
        default=None,
        metavar="VERSION",
        help="a registry version or zero-shot (default: the current head)",
    )

    models = commands.add_parser("models", help="the model registry: list, promote, rollback")
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    add_config(model_commands.add_parser("list", help="registered heads; * marks the current one"))
    promote = model_commands.add_parser("promote", help="serve VERSION from now on")
    add_config(promote)
    promote.add_argument("version", metavar="VERSION")
    add_config(model_commands.add_parser("rollback", help="return to the previously promoted head"))

    rescore = commands.add_parser("rescore", help="re-classify stored rows from their stored CLIP embeddings")
    add_config(rescore)
    rescore.add_argument(
        "--since",
        type=_time,
        default=None,
        metavar="TIME",
        help="only rows processed since (ISO, or 2h, 7d, today)",
    )
    rescore.add_argument(
        "--model",
        default=None,
        metavar="VERSION",
        help="a registry version or zero-shot (default: the current head)",
    )

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = db_commands.add_parser("upgrade", help="apply the schema migrations (Alembic, to head)")
    add_config(upgrade)
    copy = db_commands.add_parser(
        "copy",
        help="copy every result to another database (e.g. SQLite → PostgreSQL); safe to repeat",
    )
    copy.add_argument(
        "--to", required=True, metavar="URL", help="target database URL, e.g. postgresql+psycopg://host/db"
    )
    add_config(copy)
    return parser


def _time(text: str) -> datetime:
    from watcher.commands.arguments import parse_time

    try:
        return parse_time(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _dimensions(text: str) -> tuple[str, ...]:
    from watcher.store.summary import DIMENSIONS

    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in DIMENSIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"use a comma-separated list of {', '.join(DIMENSIONS)}; got {text!r}"
        )
    if "hour" in names and "day" in names:
        raise argparse.ArgumentTypeError("choose hour or day, not both")
    return names


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("results", "summary"):
        check_filter_arguments(parser, args)
    try:
        config = load_config(find_config(args.config))
    except ConfigError as error:
        print(f"cctv-gender: config error: {error}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(config.logging.level)
    try:
        if args.command == "watch":
            return run_watch(config, once=args.once, instance=args.instance)
        if args.command == "results":
            return query_commands.run_results(config, args)
        if args.command == "summary":
            return query_commands.run_summary(config, args)
        if args.command == "status":
            from watcher.service.status import collect_status, render_status

            report = collect_status(config)
            sys.stdout.write(render_status(report, output_format=args.format))
            return EXIT_OK if report["healthy"] else EXIT_FAILURE
        if args.command in ("train", "evaluate", "models"):
            return _run_model_command(config, args)
        if args.command == "rescore":
            from watcher.commands.rescore import run_rescore

            return run_rescore(config, since=args.since, version=args.model)
        if args.db_command == "copy":
            return run_db_copy(config, target_url=args.to)
        return run_db_upgrade(config)
    except ConfigError as error:
        print(f"cctv-gender: config error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except StartupError as error:
        print(f"cctv-gender: error: {error}", file=sys.stderr)
        return EXIT_FAILURE


def _run_model_command(config: Config, args: argparse.Namespace) -> int:
    from watcher.commands import models as model_commands

    if args.command == "train":
        return model_commands.run_train(config, data=args.data, promote=args.promote, seed=args.seed)
    if args.command == "evaluate":
        return model_commands.run_evaluate(config, data=args.data, version=args.model)
    if args.models_command == "list":
        return model_commands.run_models_list(config)
    if args.models_command == "promote":
        return model_commands.run_models_promote(config, version=args.version)
    return model_commands.run_models_rollback(config)


def run_db_copy(config: Config, *, target_url: str) -> int:
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from watcher.store.copy import copy_results
    from watcher.store.engine import make_engine
    from watcher.store.errors import StorageError
    from watcher.store.opening import open_database

    source = open_database(config, migrate=False, read_only=True)
    try:
        target = make_engine(target_url, busy_timeout_ms=config.database.busy_timeout_ms)
    except (ArgumentError, NoSuchModuleError) as error:
        raise StartupError(f"--to: {error}") from None
    shown = target.url.render_as_string(hide_password=True)
    if shown == source.url.render_as_string(hide_password=True):
        raise StartupError("--to names the database this config already uses")
    try:
        report = copy_results(source, target)
    except StorageError as error:
        raise StartupError(f"cannot copy to {shown}: {error}") from None
    print(
        f"copied {report.copied} rows to {shown} in {report.seconds:.1f} s "
        f"({report.already_there} were already there)"
    )
    return EXIT_OK


def run_db_upgrade(config: Config) -> int:
    from watcher.store.migrate import current_revision
    from watcher.store.opening import open_database

    engine = open_database(config, migrate=True)
    print(f"database at revision {current_revision(engine)}")
    return EXIT_OK


def run_watch(config: Config, *, once: bool, instance: str | None) -> int:
    from watcher.pipeline.assembly import build_daemon

    stop = threading.Event()
    daemon = build_daemon(config, stop=stop, instance_name=instance)

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("%s received: finishing the batch in hand, then exiting", signal.Signals(signum).name)
        stop.set()
        daemon.wake()

    def request_reload(_signum: int, _frame: FrameType | None) -> None:
        logger.info("SIGHUP received: reloading the head before the next batch")
        daemon.request_reload()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGHUP, request_reload)
    try:
        report = daemon.run(once=once)
    except (OSError, DBAPIError) as error:
        # Not a user mistake: an I/O error (a failed fsync, say) or a vanished output folder.
        # Exit non-zero; the next start recovers the frames left in progress.
        logger.exception("stopping on a storage error: %s", error)
        return EXIT_FAILURE
    logger.info(
        "stopped: %d frames ok, %d failed in %d batches, %d recovered",
        report.ok,
        report.failed,
        report.batches,
        report.recovered,
    )
    if report.left_incomplete:
        logger.warning(
            "%d frames left in the inbox for the next run (still being written, or not taken while "
            "a batch waited for the database): %s",
            len(report.left_incomplete),
            ", ".join(report.left_incomplete[:10]),
        )
    if report.left_parked:
        logger.error(
            "%d frames stay claimed: their batch could not be stored; the next run retries them",
            report.left_parked,
        )
        return EXIT_FAILURE
    return EXIT_OK
