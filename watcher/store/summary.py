"""`cctv-gender summary`: counts per camera and per hour or day, with shares and mean probability."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Select, case, func, select
from sqlalchemy.sql.elements import ColumnElement

from watcher.store.queries import ResultFilter
from watcher.store.records import Status
from watcher.store.schema import Result
from watcher.store.session import translated_errors

DIMENSIONS = ("camera", "hour", "day")
COUNT_COLUMNS = (
    "total", "female", "male", "failed", "female_share", "male_share", "failed_share", "mean_probability",
)  # fmt: skip


def _bucket(engine: Engine, unit: str) -> ColumnElement[Any]:
    """processed_at truncated to the hour or day, as ISO 8601 UTC text."""
    if engine.dialect.name == "sqlite":
        pattern = "%Y-%m-%dT%H:00:00Z" if unit == "hour" else "%Y-%m-%d"
        return func.strftime(pattern, Result.processed_at)
    pattern = 'YYYY-MM-DD"T"HH24:00:00"Z"' if unit == "hour" else "YYYY-MM-DD"
    return func.to_char(func.date_trunc(unit, Result.processed_at), pattern)


def summarize(engine: Engine, *, filters: ResultFilter, by: tuple[str, ...]) -> list[dict[str, Any]]:
    dimensions = [(Result.camera if name == "camera" else _bucket(engine, name)).label(name) for name in by]
    ok = Result.status == Status.OK
    statement: Select[Any] = select(
        *dimensions,
        func.count().label("total"),
        func.sum(case((ok & (Result.label == "female"), 1), else_=0)).label("female"),
        func.sum(case((ok & (Result.label == "male"), 1), else_=0)).label("male"),
        func.sum(case((Result.status == Status.FAILED, 1), else_=0)).label("failed"),
        func.avg(case((ok, Result.probability), else_=None)).label("mean_probability"),
    )
    statement = filters.apply(statement)
    if dimensions:
        statement = statement.group_by(*dimensions).order_by(*dimensions)
    rows = []
    with translated_errors(), engine.connect() as connection:
        for row in connection.execute(statement).mappings():
            total = int(row["total"])
            if total == 0:
                continue
            entry = {name: row[name] for name in by}
            entry.update(
                total=total, female=int(row["female"]), male=int(row["male"]), failed=int(row["failed"])
            )
            for name in ("female", "male", "failed"):
                entry[f"{name}_share"] = round(entry[name] / total, 4)
            mean = row["mean_probability"]
            entry["mean_probability"] = round(float(mean), 4) if mean is not None else None
            rows.append(entry)
    return rows


def plot_counts(rows: list[dict[str, Any]], path: Path, *, unit: str) -> None:
    """Frames over time, one line per camera."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, dict[str, int]] = {}
    for row in rows:
        series.setdefault(row["camera"] or "(no camera)", {})[row[unit]] = row["total"]
    buckets = sorted({bucket for points in series.values() for bucket in points})
    figure, axis = plt.subplots(figsize=(10, 4.5))
    for camera, points in sorted(series.items()):
        axis.plot(buckets, [points.get(bucket, 0) for bucket in buckets], marker="o", label=camera)
    axis.set_xlabel(f"{unit} (UTC)")
    axis.set_ylabel("frames")
    axis.set_title(f"Frames per camera and {unit}")
    if series:  # an empty plot (no matching rows) has no legend to draw
        axis.legend(loc="upper left", fontsize="small")
    axis.tick_params(axis="x", labelrotation=45)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
