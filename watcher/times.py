"""Times as operators type them (the command line's --since/--until, the web API's since/until)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, *, now: datetime | None = None, zone: tzinfo = UTC) -> datetime:
    """An aware UTC datetime. `today`, `yesterday` and a naive ISO time are read in `zone` (the
    site's, display.timezone). Raises ValueError with the rule."""
    now = now or datetime.now(UTC)
    lowered = text.strip().lower()
    if lowered == "now":
        return now
    if lowered in ("today", "yesterday"):
        local = now.astimezone(zone).date() - timedelta(days=1 if lowered == "yesterday" else 0)
        # Midnight as the zone has it that day (fold 0: the first of a repeated hour).
        return datetime(local.year, local.month, local.day, tzinfo=zone).astimezone(UTC)
    match = _RELATIVE.match(lowered)
    try:
        if match:
            amount, unit = float(match.group(1)), match.group(2)
            return now - timedelta(**{_UNITS[unit]: amount})
        parsed = datetime.fromisoformat(text.strip())
        return (parsed.replace(tzinfo=zone) if parsed.tzinfo is None else parsed).astimezone(UTC)
    except OverflowError:
        raise ValueError(f"out of range: {text!r} (times go from year 1 to 9999)") from None
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (use an ISO timestamp like 2026-11-25T08:00, "
            "or a relative one like 30m, 2h, 7d, today, yesterday)"
        ) from None
