"""The dashboard's stacked bars (female under male) as plain SVG geometry: no JavaScript library,
no CDN. Bars sit at their hour or day on a real time axis, so an hour without frames is a gap."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from watcher.times import bucket_start

WIDTH = 760
HEIGHT = 170
LEFT = 44
RIGHT = 8
TOP = 8
BOTTOM = 26


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    female_y: float
    female_height: float
    male_y: float
    male_height: float
    tooltip: str


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class Chart:
    camera: str
    bars: list[Bar]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    female: int
    male: int
    failed: int
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    bottom: int = HEIGHT - BOTTOM
    right: int = WIDTH - RIGHT


def window(now: datetime, *, days: int, zone: tzinfo) -> tuple[datetime, datetime, str]:
    """The span the dashboard shows: whole local hours (up to two days) or days, ending now."""
    local = now.astimezone(zone)
    if days <= 2:
        end = local.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        return end - timedelta(days=days), end, "hour"
    midnight = datetime(local.year, local.month, local.day, tzinfo=zone)
    end = midnight + timedelta(days=1)
    return end - timedelta(days=days), end, "day"


def stacked_chart(
    camera: str, rows: list[dict[str, Any]], *, start: datetime, end: datetime, unit: str, zone: tzinfo
) -> Chart:
    span = (end.astimezone(UTC) - start.astimezone(UTC)).total_seconds()
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM

    def x_of(moment: datetime) -> float:
        # In UTC: two times of one ZoneInfo subtract as wall clocks, wrong across a DST change.
        return LEFT + (moment.astimezone(UTC) - start.astimezone(UTC)).total_seconds() / span * plot_width

    step = nice_step(max((row["female"] + row["male"] for row in rows), default=0))
    top = step * 4
    bars = []
    slot = timedelta(hours=1) if unit == "hour" else timedelta(days=1)
    for row in rows:
        begins = bucket_start(row[unit], zone)
        if begins < start or begins >= end:
            continue
        female_height = row["female"] / top * plot_height
        male_height = row["male"] / top * plot_height
        base = TOP + plot_height
        bars.append(
            Bar(
                x=round(x_of(begins), 2),
                width=round(max(slot.total_seconds() / span * plot_width * 0.85, 1.0), 2),
                female_y=round(base - female_height, 2),
                female_height=round(female_height, 2),
                male_y=round(base - female_height - male_height, 2),
                male_height=round(male_height, 2),
                tooltip=f"{row[unit]}: {row['female']} female, {row['male']} male, {row['failed']} failed",
            )
        )
    y_ticks = [Tick(round(TOP + plot_height - i * plot_height / 4, 2), str(i * step)) for i in range(5)]
    return Chart(
        camera=camera,
        bars=bars,
        x_ticks=time_ticks(start, end, x_of=x_of, zone=zone),
        y_ticks=y_ticks,
        female=sum(row["female"] for row in rows),
        male=sum(row["male"] for row in rows),
        failed=sum(row["failed"] for row in rows),
    )


def nice_step(largest: int) -> int:
    """A whole-number tick step (1, 2, 5 × 10^k) so that four steps hold `largest`."""
    if largest <= 4:
        return 1
    raw = largest / 4
    power = 10 ** math.floor(math.log10(raw))
    return int(next(factor * power for factor in (1, 2, 5, 10) if factor * power >= raw))


def time_ticks(start: datetime, end: datetime, *, x_of: Any, zone: tzinfo) -> list[Tick]:
    """Labels at round local times: every 3 or 6 hours for a day or two (with the date at
    midnight), every day, 2 days or week for longer spans."""
    hours = (end.astimezone(UTC) - start.astimezone(UTC)).total_seconds() / 3600
    ticks = []
    if hours <= 48:
        every = 3 if hours <= 24 else 6
        # From `start`, a local whole hour: in a zone off by 30 or 45 minutes (Asia/Kolkata) a
        # UTC whole hour is no local one, and its tick would sit in the middle of a bar.
        moment = start.astimezone(UTC)
        while moment <= end:
            local = moment.astimezone(zone)
            if local.hour % every == 0:
                label = local.strftime("%a %d") if local.hour == 0 else local.strftime("%H:00")
                ticks.append(Tick(round(x_of(moment), 2), label))
            moment += timedelta(hours=1)
        return ticks
    days = hours / 24
    every = 1 if days <= 10 else 2 if days <= 20 else 7
    local = start.astimezone(zone)
    day = datetime(local.year, local.month, local.day, tzinfo=zone)
    index = 0
    while day <= end:
        if index % every == 0 and day >= start:
            ticks.append(Tick(round(x_of(day), 2), day.strftime("%b %d")))
        index += 1
        day = day + timedelta(days=1)  # wall-clock arithmetic: the next local midnight, across DST
    return ticks
