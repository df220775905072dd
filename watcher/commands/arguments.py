"""Parsing the times operators type: ISO timestamps, or relative ones like `2h`, `30m`, `yesterday`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """An aware UTC datetime; naive ISO input is taken as UTC. Raises ValueError with the rule."""
    now = now or datetime.now(UTC)
    lowered = text.strip().lower()
    if lowered == "now":
        return now
    if lowered in ("today", "yesterday"):
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight - timedelta(days=1 if lowered == "yesterday" else 0)
    match = _RELATIVE.match(lowered)
    if match:
        amount, unit = float(match.group(1)), match.group(2)
        return now - timedelta(**{_UNITS[unit]: amount})
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (use an ISO timestamp like 2026-11-25T08:00, "
            "or a relative one like 30m, 2h, 7d, today, yesterday)"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
