"""Times as operators mean them: typed (--since/--until, the API's since/until), in the site's
zone (display.timezone, else the host's), and summaries' hours and days turned back into times."""

from __future__ import annotations

import os
import re
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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


def parse_zone(name: str) -> ZoneInfo:
    """An IANA zone (`Europe/London`); ValueError naming the rule."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file
        raise ValueError("not a known time zone; use an IANA name like Europe/London") from None


def host_zone(localtime: Path = Path("/etc/localtime")) -> tzinfo:
    """The host's zone with its daylight-saving rules (not just today's offset), named as the
    system names it (`TZ`, or the zone /etc/localtime links to) where it can be."""
    named = os.environ.get("TZ", "").lstrip(":")
    if named:
        try:
            return parse_zone(named)
        except ValueError:
            pass
    try:
        linked = localtime.resolve().as_posix()
        if "/zoneinfo/" in linked:
            return parse_zone(linked.split("/zoneinfo/", 1)[1])
        with localtime.open("rb") as file:
            return ZoneInfo.from_file(file, key="localtime")
    except (OSError, ValueError):
        return UTC


def zone_name(zone: tzinfo) -> str:
    """`Europe/London`, or the abbreviation in force now for a zone without a name."""
    key = getattr(zone, "key", None)
    return str(key) if key and key != "localtime" else str(datetime.now(zone).tzname() or zone)


def bucket_start(bucket: str, zone: tzinfo) -> datetime:
    """A summary's hour (ISO with its offset) or day (ISO date) as an aware time in `zone`."""
    if "T" in bucket:
        return datetime.fromisoformat(bucket).astimezone(zone)
    day = date.fromisoformat(bucket)
    return datetime(day.year, day.month, day.day, tzinfo=zone)


def time_window(
    since: str | None,
    until: str | None,
    *,
    zone: tzinfo,
    names: tuple[str, str] = ("since", "until"),
    now: datetime | None = None,
) -> tuple[datetime | None, datetime | None]:
    """`since` and `until` as typed, read in `zone`; ValueError naming (as `names` call them) the
    one at fault, or saying that since is not before until."""
    times: list[datetime | None] = []
    for name, text in zip(names, (since, until), strict=True):
        try:
            times.append(parse_time(text, now=now, zone=zone) if text is not None and text.strip() else None)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
    start, end = times
    if start is not None and end is not None and start >= end:
        raise ValueError(f"{names[0]} ({start.isoformat()}) must be before {names[1]} ({end.isoformat()})")
    return start, end
