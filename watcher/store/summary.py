"""`cctv-gender summary`: counts per camera and per hour or day, with shares and mean probability.

Hours and days are the site's (`display.timezone`), not UTC's. Neither SQLite nor every
PostgreSQL knows the site's rules, so the database counts per quarter hour in UTC (every time zone
in use is a whole number of quarter hours from UTC) and the quarters are added up into local hours
and days here: a 30-minute-offset zone, a daylight-saving change and a 23-hour day all come out
right, and only cameras × quarters rows ever leave the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from sqlalchemy import BigInteger, Engine, Integer, Select, case, cast, func, select
from sqlalchemy.sql.elements import ColumnElement

from watcher.store.queries import ResultFilter, time_column
from watcher.store.records import Status
from watcher.store.schema import Result
from watcher.store.session import translated_errors

DIMENSIONS = ("camera", "hour", "day")
COUNT_COLUMNS = (
    "total", "female", "male", "failed", "female_share", "male_share", "failed_share", "mean_probability",
)  # fmt: skip
QUARTER_S = 900
# The first and last quarter hours that every zone (offsets are under a day) can show.
_FIRST_QUARTER = int(datetime(1, 1, 2, tzinfo=UTC).timestamp()) // QUARTER_S
_LAST_QUARTER = int(datetime(9999, 12, 30, tzinfo=UTC).timestamp()) // QUARTER_S


def parse_dimensions(text: str) -> tuple[str, ...]:
    """`camera,hour` as ("camera", "hour"); ValueError naming the rule."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names or any(name not in DIMENSIONS for name in names):
        raise ValueError(f"use a comma-separated list of {', '.join(DIMENSIONS)}; got {text!r}")
    if "hour" in names and "day" in names:
        raise ValueError("choose hour or day, not both")
    repeated = sorted({name for name in names if names.count(name) > 1}, key=names.index)
    if repeated:
        raise ValueError(f"name each dimension once: {', '.join(repeated)} repeated")
    return names


def _quarter(engine: Engine, filters: ResultFilter) -> ColumnElement[Any]:
    """The row's time (captured or processed) as whole quarter hours since the epoch, UTC."""
    at = time_column(filters.time_basis)
    if engine.dialect.name == "sqlite":
        # Floor division: SQLite's integer division rounds toward zero, wrong before 1970.
        seconds = cast(func.strftime("%s", at), Integer)
        return (seconds - ((seconds % QUARTER_S) + QUARTER_S) % QUARTER_S) / QUARTER_S
    # Stored without a zone, as UTC: the epoch of such a timestamp is taken as UTC.
    return cast(func.floor(func.extract("epoch", at) / QUARTER_S), BigInteger)


@dataclass
class _Counts:
    total: int = 0
    female: int = 0
    male: int = 0
    failed: int = 0
    probability_sum: float = 0.0
    probability_count: int = 0
    first_quarter: int | None = None  # for sorting local hours by their instant

    def add(self, row: Any, quarter: int | None) -> None:
        if quarter is not None and (self.first_quarter is None or quarter < self.first_quarter):
            self.first_quarter = quarter
        self.total += int(row.total)
        self.female += int(row.female or 0)
        self.male += int(row.male or 0)
        self.failed += int(row.failed or 0)
        self.probability_sum += float(row.probability_sum or 0.0)
        self.probability_count += int(row.probability_count or 0)

    def entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "total": self.total, "female": self.female, "male": self.male, "failed": self.failed,
        }  # fmt: skip
        for name in ("female", "male", "failed"):
            entry[f"{name}_share"] = round(entry[name] / self.total, 4)
        mean = self.probability_sum / self.probability_count if self.probability_count else None
        entry["mean_probability"] = round(mean, 4) if mean is not None else None
        return entry


def local_bucket(quarter: int, *, unit: str, zone: tzinfo) -> str:
    """The local hour (ISO with its offset, so the repeated hour of a daylight-saving change stays
    two hours) or day (ISO date) a UTC quarter hour falls in."""
    try:
        local = datetime.fromtimestamp(quarter * QUARTER_S, zone)
    except (OverflowError, ValueError):
        # A file time at the calendar's very ends (year 1 or 9999 on tmpfs, XFS, a NAS) that this
        # zone would carry to year 0 or 10000: counted a day inside, not a traceback.
        local = datetime.fromtimestamp(min(max(quarter, _FIRST_QUARTER), _LAST_QUARTER) * QUARTER_S, zone)
    if unit == "day":
        return local.date().isoformat()
    return local.replace(minute=0, second=0, microsecond=0).isoformat()


def summarize(
    engine: Engine, *, filters: ResultFilter, by: tuple[str, ...], zone: tzinfo
) -> list[dict[str, Any]]:
    """One entry per camera and/or local hour or day that has rows, in that order."""
    unit = next((name for name in by if name in ("hour", "day")), None)
    keys: list[ColumnElement[Any]] = []
    if "camera" in by:
        keys.append(Result.camera.label("camera"))
    if unit is not None:
        keys.append(_quarter(engine, filters).label("quarter"))
    ok = Result.status == Status.OK
    ok_probability = case((ok, Result.probability), else_=None)
    statement: Select[Any] = select(
        *keys,
        func.count().label("total"),
        func.sum(case((ok & (Result.label == "female"), 1), else_=0)).label("female"),
        func.sum(case((ok & (Result.label == "male"), 1), else_=0)).label("male"),
        func.sum(case((Result.status == Status.FAILED, 1), else_=0)).label("failed"),
        func.sum(ok_probability).label("probability_sum"),
        func.count(ok_probability).label("probability_count"),
    )
    statement = filters.apply(statement)
    if keys:
        statement = statement.group_by(*keys)
    groups: dict[tuple[Any, ...], _Counts] = {}
    with translated_errors(), engine.connect() as connection:
        for row in connection.execute(statement):
            if int(row.total) == 0:
                continue
            camera = row.camera if "camera" in by else None
            quarter = int(row.quarter) if unit is not None else None
            bucket = local_bucket(quarter, unit=unit, zone=zone) if quarter is not None and unit else None
            groups.setdefault((camera, bucket), _Counts()).add(row, quarter)

    def order(key: tuple[str | None, str | None]) -> tuple[bool, str, int]:
        # Frames without a camera first, then by name; hours by their instant, so the repeated
        # hour of a daylight-saving change keeps its place.
        return (key[0] is not None, key[0] or "", groups[key].first_quarter or 0)

    rows = []
    for camera, bucket in sorted(groups, key=order):
        entry: dict[str, Any] = {name: camera if name == "camera" else bucket for name in by}
        rows.append({**entry, **groups[(camera, bucket)].entry()})
    return rows
