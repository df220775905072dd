"""The `[web]` section: where `cctv-gender serve` listens, and its token."""

from __future__ import annotations

from typing import Self

from pydantic import Field, field_validator, model_validator

from watcher.config.base import OptionalText, Section
from watcher.config.errors import raise_problems
from watcher.config.listen import is_loopback, split_listen

MIN_TOKEN_LENGTH = 16


class WebConfig(Section):
    """The web dashboard, review pages and JSON API (`cctv-gender serve`)."""

    listen: str = Field(
        "127.0.0.1:8600",
        description="Where `cctv-gender serve` listens, HOST:PORT. An address other than loopback "
        "needs web.token.",
    )
    token: OptionalText = Field(
        None,
        description="Not set: no login (allowed on loopback only). Set: every request needs "
        "`Authorization: Bearer <token>`, or the session cookie the login page sets.",
    )
    token_name: str = Field(
        "operator",
        min_length=1,
        max_length=64,
        description="Who a review made with the token is recorded as (without a token: `local`).",
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        split_listen(value)
        return value

    @field_validator("token")
    @classmethod
    def _usable_token(cls, value: str | None) -> str | None:
        # It travels in an HTTP header (latin-1, no spaces at the ends) and must not be guessable.
        if value is not None and (
            len(value) < MIN_TOKEN_LENGTH or not value.isascii() or not value.isprintable() or " " in value
        ):
            raise ValueError(f"must be at least {MIN_TOKEN_LENGTH} printable ASCII characters without spaces")
        return value

    @model_validator(mode="after")
    def post_validation(self) -> Self:
        host, _ = split_listen(self.listen)
        if not is_loopback(host) and self.token is None:
            # Anyone on the network could read every frame and rewrite reviews.
            problem = f"must be set when web.listen ({self.listen}) is not a loopback address"
            raise_problems([("token", problem)])
        return self
