"""`summary --plot`: female and male frames per camera, stacked, on a real time axis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from watcher.times import bucket_start, zone_name
from watcher.wording import NO_CAMERA

# A camera's panel; more cameras make a taller figure, never squashed panels.
PANEL_HEIGHT_IN = 2.2
# What matplotlib's dates can hold in UTC and in any zone (the years 1-9999, a day inside for the
# zone's offset): every bar and the axis's ends lie within, or drawing fails (a file time at the
# calendar's ends, year 1 or 9999 on tmpfs, XFS or a NAS).
FIRST_DRAWABLE = datetime(1, 1, 2, tzinfo=UTC)
LAST_DRAWABLE = datetime(9999, 12, 30, tzinfo=UTC)
# Room left on either side of the bars, as a share of their span (matplotlib's own margin).
X_MARGIN = 0.05


def plot_counts(rows: list[dict[str, Any]], path: Path, *, unit: str, zone: tzinfo) -> int:
    """One panel per camera: female and male frames stacked per hour or day, bars placed at their
    time (an hour or day without frames is a gap, not a squeezed-out category), whole numbers on
    the count axis, dates labelled concisely at any span from a day to months. Returns how many
    frames were left out: those whose hour or day the time axis cannot hold (years 1 and 9999)."""
    width = timedelta(hours=1) if unit == "hour" else timedelta(days=1)
    placed: list[tuple[datetime, dict[str, Any]]] = []
    left_out = 0
    for row in rows:
        start = _bar_start(row[unit], zone, width)
        if start is None:
            left_out += int(row["female"]) + int(row["male"])
        else:
            placed.append((start, row))
    _draw(placed, path, unit=unit, zone=zone, width=width)
    return left_out


def _bar_start(bucket: str, zone: tzinfo, width: timedelta) -> datetime | None:
    """The hour's or day's start, or None where its bar would not lie within the drawable years."""
    try:
        start = bucket_start(bucket, zone)
        if start.astimezone(UTC) >= FIRST_DRAWABLE and (start + width).astimezone(UTC) <= LAST_DRAWABLE:
            return start
    except (OverflowError, ValueError):  # the zone carries it to year 0 or 10000
        pass
    return None


def _x_limits(starts: list[datetime], width: timedelta) -> tuple[datetime, datetime]:
    """The bars' span with a margin each side, as matplotlib would pick it, but never past the
    drawable years: its own margin around a bar in year 1 or 9999 reached year 0 or 10000."""
    first, last = min(starts), max(starts) + width
    margin = (last - first) * X_MARGIN
    try:
        low = max(first - margin, FIRST_DRAWABLE)
    except OverflowError:
        low = FIRST_DRAWABLE
    try:
        high = min(last + margin, LAST_DRAWABLE)
    except OverflowError:
        high = LAST_DRAWABLE
    return low, high


def _draw(
    placed: list[tuple[datetime, dict[str, Any]]], path: Path, *, unit: str, zone: tzinfo, width: timedelta
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    cameras = sorted({row["camera"] or NO_CAMERA for _, row in placed}) or ["(no frames)"]
    figure, axes = plt.subplots(
        len(cameras), 1, sharex=True, squeeze=False, figsize=(11, 1.2 + PANEL_HEIGHT_IN * len(cameras))
    )
    for axis, camera in zip(axes[:, 0], cameras, strict=True):
        mine = [(start, row) for start, row in placed if (row["camera"] or NO_CAMERA) == camera]
        starts = [start for start, _ in mine]
        female = [row["female"] for _, row in mine]
        male = [row["male"] for _, row in mine]
        # Bars start at their hour or day and are 90% as wide, so neighbours stay apart.
        axis.bar(starts, female, width=width * 0.9, align="edge", color="#c2185b", label="female")
        axis.bar(starts, male, width=width * 0.9, align="edge", bottom=female, color="#1976d2", label="male")
        axis.set_ylabel("frames")
        # A folder name is not TeX: `cam$\frac$1` would fail mathtext (a traceback), `a$b$` be set in italics.
        axis.set_title(camera, loc="left", fontsize="medium", parse_math=False)
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(axis="y", alpha=0.3)
    _time_axis(axes[-1, 0], [start for start, _ in placed], width=width, unit=unit, zone=zone)
    axes[0, 0].legend(loc="upper right", fontsize="small")
    figure.suptitle(f"Female and male frames per camera and {unit}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _time_axis(axis: Any, starts: list[datetime], *, width: timedelta, unit: str, zone: tzinfo) -> None:
    """The shared time axis: the bars' span, dates placed and labelled concisely in the site's
    zone; near the calendar's ends, where matplotlib's ticks in that zone leave the calendar (year
    ticks start on 1 January of year 1 there, year 0 in UTC east of it; day ticks reach a span past
    the axis's end), in UTC, and the axis says so."""
    import matplotlib.dates as mdates

    if starts:
        axis.set_xlim(*_x_limits(starts, width))
    tick_zone = zone
    locator = _date_locator(zone)
    axis.xaxis.set_major_locator(locator)
    try:
        locator()
    except (OverflowError, ValueError):
        tick_zone = UTC
        locator = _date_locator(UTC)
        axis.xaxis.set_major_locator(locator)
    axis.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=tick_zone))  # type: ignore[no-untyped-call]
    dates_in = "" if tick_zone is zone else "; dates on the axis in UTC"
    axis.set_xlabel(f"{unit} ({zone_name(zone)}{dates_in})")


def _date_locator(zone: tzinfo) -> Any:
    """matplotlib's automatic date ticks, without those outside the drawable years (a tick on 1
    January of year 1 west of UTC, which formatting can round back to year 0): the axis's ends lie
    inside them (_x_limits), so no tick it would show is lost."""
    import matplotlib.dates as mdates
    import numpy as np

    bounds = mdates.date2num([FIRST_DRAWABLE, LAST_DRAWABLE])  # type: ignore[no-untyped-call]

    class Locator(mdates.AutoDateLocator):
        def __call__(self) -> Any:
            ticks = np.asarray(super().__call__())  # type: ignore[no-untyped-call]
            return ticks[(ticks >= bounds[0]) & (ticks <= bounds[1])]

    return Locator(tz=zone)  # type: ignore[no-untyped-call]
