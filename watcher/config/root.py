"""The whole configuration: its sections, the checks across them, and the places derived from them."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, PrivateAttr, ValidationInfo, model_validator
from sqlalchemy.exc import ArgumentError

from watcher.config.base import Section, source_of, unset_section
from watcher.config.classifier import ModelConfig, TrainingConfig
from watcher.config.database import DatabaseConfig
from watcher.config.display import DisplayConfig
from watcher.config.errors import raise_problems
from watcher.config.folders import PathsConfig
from watcher.config.sections import BatchConfig, InboxConfig, LoggingConfig, MetricsConfig, StatusConfig
from watcher.config.web import WebConfig
from watcher.store.engine import sqlite_file

IN_PROGRESS_DIRNAME = ".in-progress"


class Config(Section):
    """The daemon's configuration, validated once in `main()` and passed down."""

    paths: PathsConfig = Field(default_factory=unset_section, description=PathsConfig.__doc__)
    inbox: InboxConfig = Field(default_factory=unset_section, description=InboxConfig.__doc__)
    batch: BatchConfig = Field(default_factory=unset_section, description=BatchConfig.__doc__)
    model: ModelConfig = Field(default_factory=unset_section, description=ModelConfig.__doc__)
    database: DatabaseConfig = Field(default_factory=unset_section, description=DatabaseConfig.__doc__)
    training: TrainingConfig = Field(default_factory=unset_section, description=TrainingConfig.__doc__)
    metrics: MetricsConfig = Field(default_factory=unset_section, description=MetricsConfig.__doc__)
    status: StatusConfig = Field(default_factory=unset_section, description=StatusConfig.__doc__)
    logging: LoggingConfig = Field(default_factory=unset_section, description=LoggingConfig.__doc__)
    web: WebConfig = Field(default_factory=unset_section, description=WebConfig.__doc__)
    display: DisplayConfig = Field(default_factory=unset_section, description=DisplayConfig.__doc__)
    # Not a key: where the file was read from, taken from the validation context.
    _source: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def post_validation(self, info: ValidationInfo) -> Self:
        source = source_of(info)
        self._source = source.file if source is not None else None
        raise_problems(self._database_in_inbox())
        return self

    def _database_in_inbox(self) -> list[tuple[str, str]]:
        """A SQLite file in the inbox could be taken for a frame (`db.bmp`) and moved away under the
        daemon, with every row in it."""
        try:
            file = sqlite_file(self.database_url)
        except ArgumentError:
            return []  # reported where the engine is made, naming database.url
        if file is None:
            return []
        try:
            database = file.resolve()
        except (OSError, RuntimeError):  # a symlink loop: opening the database reports it
            return []
        if not database.is_relative_to(self.paths.inbox):
            return []
        key = "database.url" if self.database.url else "paths.data"
        inbox = self.paths.inbox
        return [(key, f"the database file must not be inside paths.inbox ({inbox}); it is {database}")]

    @property
    def source(self) -> Path | None:
        """The config file this was read from (None when validated without one)."""
        return self._source

    @property
    def in_progress(self) -> Path:
        # Inside the inbox so that claiming is a rename on one filesystem, hence atomic.
        return self.paths.inbox / IN_PROGRESS_DIRNAME

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.paths.data / 'results.sqlite3'}"

    @property
    def registry_dir(self) -> Path:
        return self.model.registry or self.paths.data / "models"

    @property
    def feature_cache_dir(self) -> Path:
        return self.training.feature_cache or self.paths.data / "feature-cache"
