"""Argument types: what operators type, parsed once by argparse (a bad value is exit code 2).

Times are ISO timestamps or relative ones like `2h`, `30m`, `yesterday`; probabilities lie in
[0, 1]; summary dimensions are a comma-separated list; limits are positive whole numbers; folders
to read must exist, and a file to write needs an existing folder. All of this is checked here,
before any command loads a model or opens the database.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import NoReturn

from watcher.commands.exit_codes import EXIT_USAGE
from watcher.store.summary import parse_dimensions
from watcher.times import parse_time


class UsageError(Exception):
    """Arguments that are each valid but do not go together; reported like argparse's own errors."""


class Parser(argparse.ArgumentParser):
    """argparse with each error on one line and exit code 2, instead of the whole usage first."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def add_config(parser: argparse.ArgumentParser) -> None:
    """The options every command that reads the config takes: --config, and --debug (also global)."""
    parser.add_argument(
        "--config",
        type=path_type,
        default=None,
        metavar="PATH",
        help="config file (default: ./config.toml, then /etc/cctv-gender/config.toml)",
    )
    add_debug(parser, default=argparse.SUPPRESS)


def add_debug(parser: argparse.ArgumentParser, *, default: object) -> None:
    # A command's own --debug has no default, so it never hides the global `cctv-gender --debug`.
    parser.add_argument(
        "--debug", action="store_true", default=default, help="show tracebacks with error messages"
    )


@dataclass(frozen=True)
class WrittenTime:
    """A time as typed, checked at once; what instant it is depends on the site's zone, which is
    known only once the config is read."""

    text: str

    def at(self, zone: tzinfo) -> datetime:
        return parse_time(self.text, zone=zone)


def time_type(text: str) -> WrittenTime:
    try:
        parse_time(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return WrittenTime(text)


def probability_type(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def dimensions_type(text: str) -> tuple[str, ...]:
    try:
        return parse_dimensions(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


# The largest count a database's 64-bit integer (a LIMIT) can take.
MAX_COUNT = 2**63 - 1
# What matplotlib can write (its savefig formats without a backend beyond Agg).
PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def positive_int_type(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    if value > MAX_COUNT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_COUNT}, got {value}")
    return value


# What seeds the split (scikit-learn's random_state) and the fit (numpy's seed) can take.
MAX_SEED = 2**32 - 1


def seed_type(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_SEED}, got {value}")
    return value


def non_empty_type(text: str) -> str:
    """A value that must say something (a URL, an address, a user name): an empty one (`--to ""`, an
    unset shell variable) is a mistake, not the option left out."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def url_type(text: str) -> str:
    """A database URL typed or pasted: a space or line break carried at either end is a mistake
    (SQLAlchemy cannot read it in front; behind, it became part of a SQLite file's name). The value
    is not shown: it may hold a password."""
    text = non_empty_type(text)
    if text != text.strip():
        raise argparse.ArgumentTypeError("starts or ends with a space or line break: remove it")
    return text


def path_type(text: str) -> Path:
    return Path(text)


def existing_directory_type(text: str) -> Path:
    """A folder to read (a labelled dataset): it must exist now, before any model loads."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {'not a folder' if path.exists() else 'no such folder'}")
    return path


def folder_to_make_type(text: str) -> Path:
    """A folder to save into: missing (it is made) or a folder, never a file; checked first."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a file, not a folder")
    return path


def output_file_type(text: str) -> Path:
    """A file to write (a plot): its folder must exist and be writable; the file is replaced."""
    path = Path(text)
    folder = path.parent
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder, not a file name")
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise argparse.ArgumentTypeError(f"{text}: a plot is written as {', '.join(PLOT_SUFFIXES)}")
    if folder.exists() and not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {str(folder)!r} is a file, not a folder")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such folder {str(folder)!r}")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text}: cannot write in {str(folder)!r}")
    return path


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    """`--data DIR`: a labelled folder (`train`, `evaluate`), checked before any model loads."""
    parser.add_argument(
        "--data",
        type=existing_directory_type,
        required=True,
        metavar="DIR",
        help="folder with FEMALE/ and MALE/",
    )


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """`--model VERSION`: which head (`evaluate`, `rescore`)."""
    parser.add_argument(
        "--model",
        default=None,
        metavar="VERSION",
        help="a registry version or zero-shot (default: the current head)",
    )
