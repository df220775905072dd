"""The daemon's configuration: one typed object, loaded and validated once in `main()`.

Every key is documented in the repository's `config.toml` (each comment there is the key's
description here, which a test holds them to). Validation errors become one `ConfigError` with a
line per problem naming the file and the key, so startup stops without a traceback.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import ValidationError

from watcher.config.base import ConfigSource
from watcher.config.classifier import ModelConfig, TrainingConfig, ZeroShotConfig
from watcher.config.database import DatabaseConfig
from watcher.config.display import DisplayConfig
from watcher.config.errors import ConfigError, describe
from watcher.config.folders import PathsConfig
from watcher.config.root import IN_PROGRESS_DIRNAME, Config
from watcher.config.sections import BatchConfig, InboxConfig, LoggingConfig, MetricsConfig, StatusConfig
from watcher.config.web import WebConfig

__all__ = [
    "DEFAULT_CONFIG_LOCATIONS",
    "IN_PROGRESS_DIRNAME",
    "BatchConfig",
    "Config",
    "ConfigError",
    "ConfigSource",
    "DatabaseConfig",
    "DisplayConfig",
    "InboxConfig",
    "LoggingConfig",
    "MetricsConfig",
    "ModelConfig",
    "PathsConfig",
    "StatusConfig",
    "TrainingConfig",
    "WebConfig",
    "ZeroShotConfig",
    "find_config",
    "load_config",
]

DEFAULT_CONFIG_LOCATIONS = (Path("config.toml"), Path("/etc/cctv-gender/config.toml"))


def find_config(explicit: Path | None) -> Path:
    """The config file to use: the one asked for, else the first default location that exists."""
    if explicit is not None:
        if explicit.is_dir():
            raise ConfigError(f"{explicit}: is a folder, not a config file")
        if not explicit.is_file():
            raise ConfigError(f"{explicit}: config file not found")
        return explicit
    for candidate in DEFAULT_CONFIG_LOCATIONS:
        if candidate.is_file():
            return candidate
    tried = " or ".join(str(path) for path in DEFAULT_CONFIG_LOCATIONS)
    raise ConfigError(f"no config file: looked for {tried}; pass --config PATH")


def load_config(path: Path) -> Config:
    """Read and validate one config file (its relative paths resolved against its folder), or
    raise `ConfigError` listing every problem, a line each: `file: section.key: message`."""
    try:
        # utf-8-sig: a byte-order mark, as Windows' Notepad saves, is no "Invalid statement".
        raw = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from None
    try:
        return Config.model_validate(raw, context=ConfigSource(path.resolve()))
    except ValidationError as error:
        raise ConfigError("\n".join(f"{path}: {line}" for line in describe(error))) from None
