"""The `[display]` section: the site's time zone, resolved once."""

from __future__ import annotations

from datetime import UTC, tzinfo
from typing import Self

from pydantic import Field, PrivateAttr, field_validator, model_validator

from watcher.config.base import OptionalText, Section
from watcher.times import host_zone, parse_zone


class DisplayConfig(Section):
    """How times are shown and bucketed for operators."""

    timezone: OptionalText = Field(
        None,
        description="The site's time zone (an IANA name like Europe/London): `today`, `yesterday`, "
        "`summary --by hour|day`, and the web pages use it. Not set: the host's.",
    )
    _zone: tzinfo | None = PrivateAttr(default=None)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            parse_zone(value)
        return value

    @model_validator(mode="after")
    def post_validation(self) -> Self:
        self._zone = parse_zone(self.timezone) if self.timezone is not None else host_zone()
        return self

    @property
    def zone(self) -> tzinfo:
        return self._zone or UTC  # always set by post_validation
