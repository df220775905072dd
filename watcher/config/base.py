"""What every config section shares: strict validation, and paths that resolve against the config
file's folder, which pydantic hands each validator as its validation context."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationInfo


class Section(BaseModel):
    # Unknown keys are typos until proven otherwise; strict types stop "32" passing as 32.
    # Defaults are validated too, so a default relative path resolves like a written one.
    # Not inf or nan either (TOML writes both): no interval, timeout or rate is endless.
    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, validate_default=True, allow_inf_nan=False
    )


# The longest interval or timeout a key may name. Past about 292 years a wait overflows
# (OverflowError: the daemon would stop at its first rescan), and nothing here waits a year.
A_YEAR_S = 365 * 24 * 60 * 60
A_YEAR_MS = A_YEAR_S * 1000
# How a limit that is not a round number reads in a message ("less than or equal to 31536000, a year").
NAMED_LIMITS = {A_YEAR_S: "a year", A_YEAR_MS: "a year"}


@dataclass(frozen=True)
class ConfigSource:
    """The validation context `load_config` passes: the config file, resolved."""

    file: Path

    @property
    def folder(self) -> Path:
        return self.file.parent


def source_of(info: ValidationInfo) -> ConfigSource | None:
    """The config file being validated; None for a model validated without one (paths then stay
    as written)."""
    return info.context if isinstance(info.context, ConfigSource) else None


# The same file is read by the service's user (systemd sets its HOME), by root running install.sh,
# selftest or `db upgrade`, and by an operator: each has another home folder, so a `~` would name
# a different folder to each of them.
HOME_REFUSED = (
    "starts with ~, a different home folder for each user who reads this file (the service's user, "
    "root running install.sh or selftest): write the path out, or relative to this file's folder"
)


def refuse_home(value: str) -> None:
    """ValueError for a path that starts with `~` (or `~user`) as a path reads it: `./~/x` too,
    which expanduser expands just the same."""
    if str(PurePath(value)).startswith("~"):
        raise ValueError(HOME_REFUSED)


def resolve(base: Path, value: Path) -> Path:
    # Absolute paths too: folders are compared as the filesystem sees them (`inbox/..`, or a
    # symlink to the inbox, must not pass as a different folder). strict=False: they may not
    # exist yet.
    try:
        return (base / value.expanduser()).resolve()
    except (OSError, RuntimeError) as error:  # a symlink loop, a `~user` that does not exist
        raise ValueError(f"cannot resolve {value}: {error}") from None


def unset_section() -> Any:
    """A missing section is validated like an empty one, so its paths resolve too."""
    return {}


def _written_path(value: object) -> object:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("must not be empty")
        value = Path(value)
    if not isinstance(value, Path):
        raise ValueError("Input should be a valid string")
    refuse_home(str(value))
    return value


def _path_or_unset(value: object) -> object:
    # An empty string is how earlier config files said "not set": they keep working.
    if isinstance(value, str) and not value.strip():
        return None
    return None if value is None else _written_path(value)


def _text_or_unset(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


def _resolved(value: Path | None, info: ValidationInfo) -> Path | None:
    source = source_of(info)
    if value is None or source is None:
        return value
    return resolve(source.folder, value)


FolderPath = Annotated[Path, BeforeValidator(_written_path), AfterValidator(_resolved)]
OptionalPath = Annotated[Path | None, BeforeValidator(_path_or_unset), AfterValidator(_resolved)]
OptionalText = Annotated[str | None, BeforeValidator(_text_or_unset)]
