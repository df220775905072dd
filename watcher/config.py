"""The daemon's configuration: one typed object, loaded and validated once in `main()`.

Every key is documented in the repository's `config.toml`. Validation errors become one
`ConfigError` line naming the file and the key, so startup stops without a traceback.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from model.labels import Label
from watcher.store.engine import sqlite_file

DEFAULT_CONFIG_LOCATIONS = (Path("config.toml"), Path("/etc/cctv-gender/config.toml"))
IN_PROGRESS_DIRNAME = ".in-progress"


class ConfigError(Exception):
    """A configuration the daemon cannot start with; the message names the file and the key."""


class _Section(BaseModel):
    # Unknown keys are typos until proven otherwise; strict types stop "32" passing as 32.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class PathsConfig(_Section):
    inbox: Path = Path("inbox")
    processed: Path = Path("processed")
    failed: Path = Path("failed")
    data: Path = Path("data")

    @field_validator("inbox", "processed", "failed", "data", mode="before")
    @classmethod
    def _non_empty_path(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                raise ValueError("must not be empty")
            return Path(value)
        return value


class InboxConfig(_Section):
    mode: Literal["auto", "events", "poll"] = "auto"
    poll_scan_s: Annotated[float, Field(gt=0)] = 2.0
    settle_ms: Annotated[int, Field(ge=0)] = 1000
    readiness_timeout_s: Annotated[float, Field(gt=0)] = 300.0
    rescan_interval_s: Annotated[float, Field(gt=0)] = 30.0
    poll_interval_ms: Annotated[int, Field(gt=0)] = 250
    # Pillow itself refuses images over 2 × its MAX_IMAGE_PIXELS (178,956,970) when opening them.
    max_pixels: Annotated[int, Field(gt=0, le=178_956_970)] = 40_000_000
    # A file over this size is refused before a byte of it is read (so is one far larger than its
    # BMP header declares): a huge or sparse file must not cost the daemon its memory.
    max_file_bytes: Annotated[int, Field(ge=1024, le=2**40)] = 256 * 1024 * 1024


class BatchConfig(_Section):
    size: Annotated[int, Field(ge=1, le=4096)] = 32
    max_wait_ms: Annotated[int, Field(ge=0)] = 500
    # Threads reading, hashing and decoding frames; 0 means one per CPU core.
    decode_workers: Annotated[int, Field(ge=0, le=256)] = 0

    @property
    def decode_threads(self) -> int:
        return self.decode_workers or os.cpu_count() or 1


class ZeroShotConfig(_Section):
    female: Annotated[list[str], Field(min_length=1)] = [
        "a photo of a woman",
        "a CCTV image of a woman",
    ]
    male: Annotated[list[str], Field(min_length=1)] = [
        "a photo of a man",
        "a CCTV image of a man",
    ]

    @field_validator("female", "male")
    @classmethod
    def _no_blank_prompts(cls, prompts: list[str]) -> list[str]:
        if any(not prompt.strip() for prompt in prompts):
            raise ValueError("prompts must not be blank")
        return prompts

    def by_label(self) -> dict[Label, list[str]]:
        return {Label.FEMALE: list(self.female), Label.MALE: list(self.male)}


class ModelConfig(_Section):
    clip: Annotated[str, Field(min_length=1)] = "openai/clip-vit-base-patch32"
    device: str = "auto"
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    # CPU threads for CLIP on the CPU; 0 keeps torch's default (one per core). Several daemons on
    # one host should split the cores between them: oversubscribed threads spin against each other.
    cpu_threads: Annotated[int, Field(ge=0, le=1024)] = 0
    registry: str = ""
    zero_shot: ZeroShotConfig = ZeroShotConfig()

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda") or (
            value.startswith("cuda:") and value.removeprefix("cuda:").isdigit()
        ):
            return value
        raise ValueError("must be 'auto', 'cpu', 'cuda' or 'cuda:N'")


class DatabaseConfig(_Section):
    url: str = ""
    busy_timeout_ms: Annotated[int, Field(ge=0)] = 10_000
    store_embeddings: bool = True


class TrainingConfig(_Section):
    validation_fraction: Annotated[float, Field(gt=0, lt=0.5)] = 0.15
    test_fraction: Annotated[float, Field(gt=0, lt=0.5)] = 0.15
    epochs: Annotated[int, Field(ge=1)] = 200
    batch_size: Annotated[int, Field(ge=1)] = 32
    patience: Annotated[int, Field(ge=1)] = 10
    learning_rate: Annotated[float, Field(gt=0)] = 0.001
    seed: int = 42
    extract_batch_size: Annotated[int, Field(ge=1, le=4096)] = 32
    feature_cache: str = ""


class MetricsConfig(_Section):
    listen: str = ""

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value:
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError("must be HOST:PORT, like 127.0.0.1:9464, or empty to switch metrics off")
        return value


class StatusConfig(_Section):
    stall_after_s: Annotated[float, Field(gt=0)] = 300.0


class LoggingConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"


class Config(_Section):
    paths: PathsConfig = PathsConfig()
    inbox: InboxConfig = InboxConfig()
    batch: BatchConfig = BatchConfig()
    model: ModelConfig = ModelConfig()
    database: DatabaseConfig = DatabaseConfig()
    training: TrainingConfig = TrainingConfig()
    metrics: MetricsConfig = MetricsConfig()
    status: StatusConfig = StatusConfig()
    logging: LoggingConfig = LoggingConfig()
    # Where the file was read from; relative paths in it resolve against its folder.
    source: Path | None = Field(default=None, exclude=True)

    @property
    def in_progress(self) -> Path:
        # Inside the inbox so that claiming is a rename on one filesystem, hence atomic.
        return self.paths.inbox / IN_PROGRESS_DIRNAME

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.paths.data / 'results.sqlite3'}"

    @property
    def registry_dir(self) -> Path:
        return Path(self.model.registry) if self.model.registry else self.paths.data / "models"

    @property
    def feature_cache_dir(self) -> Path:
        cache = self.training.feature_cache
        return Path(cache) if cache else self.paths.data / "feature-cache"


def find_config(explicit: Path | None) -> Path:
    """The config file to use: the one asked for, else the first default location that exists."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"{explicit}: config file not found")
        return explicit
    for candidate in DEFAULT_CONFIG_LOCATIONS:
        if candidate.is_file():
            return candidate
    tried = " or ".join(str(path) for path in DEFAULT_CONFIG_LOCATIONS)
    raise ConfigError(f"no config file: looked for {tried}; pass --config PATH")


def load_config(path: Path) -> Config:
    """Read, validate and resolve one config file, or raise `ConfigError` naming the key."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from None
    try:
        config = Config.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{path}: {_describe_first_error(error)}") from None
    try:
        return _resolve_paths(config, base=path.resolve().parent, source=path.resolve())
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def _describe_first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"] if not isinstance(part, int)) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    message = first["msg"].removeprefix("Value error, ")
    return f"{key}: {message} (got {first['input']!r})"


def _resolve(base: Path, value: Path) -> Path:
    # Absolute paths too: folders are compared as the filesystem sees them (`inbox/..`, or a
    # symlink to the inbox, must not pass as a different folder). strict=False: they may not
    # exist yet.
    return (base / value.expanduser()).resolve()


def _resolve_database_url(base: Path, url: str) -> str:
    """A relative SQLite path in `database.url` resolves against the config's folder, like every
    other path, instead of against whatever folder the command was started from."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url  # opening the database reports it, naming database.url
    database = parsed.database
    if (
        parsed.get_backend_name() != "sqlite"
        or database in (None, "", ":memory:")
        or database.startswith("file:")  # a SQLite URI (uri=true): left as written
        or Path(database).is_absolute()
    ):
        return url
    resolved = parsed.set(database=str(_resolve(base, Path(database))))
    return resolved.render_as_string(hide_password=False)


def _resolve_paths(config: Config, *, base: Path, source: Path) -> Config:
    paths = config.paths
    resolved_paths = PathsConfig(
        inbox=_resolve(base, paths.inbox),
        processed=_resolve(base, paths.processed),
        failed=_resolve(base, paths.failed),
        data=_resolve(base, paths.data),
    )
    model = config.model
    updates: dict[str, object] = {}
    if model.registry:
        updates["registry"] = str(_resolve(base, Path(model.registry)))
    # A CLIP source that names an existing folder (relative to the config) loads offline from
    # it; anything else is a Hugging Face model id.
    local_clip = _resolve(base, Path(model.clip))
    if local_clip.is_dir():
        updates["clip"] = str(local_clip)
    resolved_model = model.model_copy(update=updates)
    training = config.training
    if training.feature_cache:
        training = training.model_copy(
            update={"feature_cache": str(_resolve(base, Path(training.feature_cache)))}
        )
    if training.validation_fraction + training.test_fraction > 0.8:
        raise ConfigError(
            "training.test_fraction: with training.validation_fraction it leaves under 20% to train on"
        )
    _check_distinct_folders(resolved_paths)
    database = config.database
    if database.url:
        database = database.model_copy(update={"url": _resolve_database_url(base, database.url)})
    resolved = config.model_copy(
        update={
            "paths": resolved_paths,
            "model": resolved_model,
            "training": training,
            "database": database,
            "source": source,
        }
    )
    _check_database_outside_inbox(resolved)
    return resolved


def _check_database_outside_inbox(config: Config) -> None:
    """A SQLite file in the inbox could be taken for a frame (`db.bmp`) and moved away under the
    daemon, with every row in it."""
    try:
        file = sqlite_file(config.database_url)
    except ArgumentError:
        return  # reported where the engine is made
    if file is None:
        return
    database = file.resolve()
    if database.is_relative_to(config.paths.inbox):
        key = "database.url" if config.database.url else "paths.data"
        raise ConfigError(
            f"{key}: the database file must not be inside paths.inbox ({config.paths.inbox}); "
            f"it is {database}"
        )


def _check_distinct_folders(paths: PathsConfig) -> None:
    """The paths are resolved: `..` and symlinks no longer disguise one folder as another."""
    inbox = paths.inbox
    for key, folder in (("paths.processed", paths.processed), ("paths.failed", paths.failed)):
        if folder == inbox:
            raise ConfigError(f"{key}: must differ from paths.inbox (both are {folder})")
        # Frames moved there would be found in the inbox again and processed twice.
        if folder.is_relative_to(inbox):
            raise ConfigError(f"{key}: must not be inside paths.inbox ({inbox}); it is {folder}")
        # A camera folder named like the path down to the inbox would move frames back into it.
        if inbox.is_relative_to(folder):
            raise ConfigError(f"paths.inbox: must not be inside {key} ({folder}); it is {inbox}")
    if paths.failed == paths.processed:
        raise ConfigError(f"paths.failed: must differ from paths.processed (both are {paths.failed})")
