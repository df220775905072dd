"""Configuration errors, and pydantic's validation errors turned into one line per problem."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from watcher.config.base import NAMED_LIMITS


class ConfigError(Exception):
    """A configuration the daemon cannot start with: one line per problem, each naming the file
    and the key."""


class ConfigProblems(ValueError):
    """Every problem one cross-field check found, each with the key it is about (relative to the
    model that raised it): pydantic keeps the exception in the error's context, so each problem
    becomes its own line instead of one line for the whole section."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{key}: {message}" for key, message in problems))
        self.problems = tuple(problems)


def raise_problems(problems: Sequence[tuple[str, str]]) -> None:
    if problems:
        raise ConfigProblems(problems)


# Keys whose values may hold a password or a token.
SECRET_KEYS = frozenset({"database.url", "web.token"})


def describe(error: ValidationError) -> list[str]:
    """`section.key: message` for every problem pydantic found, in the order of the keys."""
    lines: list[str] = []
    for details in error.errors():
        # List positions (the 2nd prompt) are left out: the key is what the user looks for.
        location = [str(part) for part in details["loc"] if not isinstance(part, int)]
        raised = details.get("ctx", {}).get("error")
        if isinstance(raised, ConfigProblems):
            lines += [f"{_key([*location, key])}: {message}" for key, message in raised.problems]
        elif details["type"] == "extra_forbidden":
            lines.append(f"{_key(location)}: unknown key")
        else:
            message = details["msg"].removeprefix("Value error, ")
            if details["type"] == "less_than_equal" and details["ctx"]["le"] in NAMED_LIMITS:
                message += f", {NAMED_LIMITS[details['ctx']['le']]}"
            # A secret is not printed back (the line goes to the journal): the key says enough.
            key = _key(location)
            secret = any(key == name or name.startswith(f"{key}.") for name in SECRET_KEYS)
            shown = "" if secret else f" (got {details['input']!r})"
            lines.append(f"{_key(location)}: {message}{shown}")
    return list(dict.fromkeys(lines))


def _key(parts: list[str]) -> str:
    return ".".join(parts) or "(top level)"
