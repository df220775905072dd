"""`summary --plot`: female and male frames per camera, stacked, on a real time axis."""

from __future__ import annotations

from datetime import timedelta, tzinfo
from pathlib import Path
from typing import Any

from watcher.times import bucket_start, zone_name

# A camera's panel; more cameras make a taller figure, never squashed panels.
PANEL_HEIGHT_IN = 2.2


def plot_counts(rows: list[dict[str, Any]], path: Path, *, unit: str, zone: tzinfo) -> None:
    """One panel per camera: female and male frames stacked per hour or day, bars placed at their
    time (an hour or day without frames is a gap, not a squeezed-out category), whole numbers on
    the count axis, dates labelled concisely at any span from a day to months."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    cameras = sorted({row["camera"] or "(no camera)" for row in rows}) or ["(no frames)"]
    figure, axes = plt.subplots(
        len(cameras), 1, sharex=True, squeeze=False, figsize=(11, 1.2 + PANEL_HEIGHT_IN * len(cameras))
    )
    width = timedelta(hours=1) if unit == "hour" else timedelta(days=1)
    for axis, camera in zip(axes[:, 0], cameras, strict=True):
        mine = [row for row in rows if (row["camera"] or "(no camera)") == camera]
        starts = [bucket_start(row[unit], zone) for row in mine]
        female = [row["female"] for row in mine]
        male = [row["male"] for row in mine]
        # Bars start at their hour or day and are 90% as wide, so neighbours stay apart.
        axis.bar(starts, female, width=width * 0.9, align="edge", color="#c2185b", label="female")
        axis.bar(starts, male, width=width * 0.9, align="edge", bottom=female, color="#1976d2", label="male")
        axis.set_ylabel("frames")
        # A folder name is not TeX: `cam$\frac$1` would fail mathtext (a traceback), `a$b$` be set in italics.
        axis.set_title(camera, loc="left", fontsize="medium", parse_math=False)
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(axis="y", alpha=0.3)
    locator = mdates.AutoDateLocator(tz=zone)  # type: ignore[no-untyped-call]
    bottom = axes[-1, 0]
    bottom.xaxis.set_major_locator(locator)
    formatter = mdates.ConciseDateFormatter(locator, tz=zone)  # type: ignore[no-untyped-call]
    bottom.xaxis.set_major_formatter(formatter)
    bottom.set_xlabel(f"{unit} ({zone_name(zone)})")
    axes[0, 0].legend(loc="upper right", fontsize="small")
    figure.suptitle(f"Female and male frames per camera and {unit}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
