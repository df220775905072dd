"""`cctv-gender results`: the latest rows, as a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from watcher.store import Result

# Columns in the order operators read them; all of them go to CSV and JSON.
ALL_COLUMNS = (
    "id",
    "processed_at",
    "camera",
    "source_path",
    "label",
    "probability",
    "status",
    "error",
    "model_version",
    "width",
    "height",
    "size_bytes",
    "sha256",
    "file_mtime",
    "received_at",
    "stored_path",
    "frame_key",
)
TABLE_COLUMNS = (
    "id",
    "processed_at",
    "camera",
    "source_path",
    "label",
    "probability",
    "status",
    "model_version",
    "error",
)


class OutputFormat(StrEnum):
    TABLE = "table"
    CSV = "csv"
    JSON = "json"


def latest_results(engine: Engine, *, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` rows, newest first, as plain dictionaries."""
    with Session(engine) as session:
        rows = session.scalars(select(Result).order_by(Result.id.desc()).limit(limit)).all()
        return [{column: getattr(row, column) for column in ALL_COLUMNS} for row in rows]


def render(rows: Sequence[dict[str, Any]], *, output_format: OutputFormat) -> str:
    if output_format == OutputFormat.JSON:
        return json.dumps([{k: _json_value(v) for k, v in row.items()} for row in rows], indent=2) + "\n"
    if output_format == OutputFormat.CSV:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=ALL_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _text(v) for k, v in row.items()} for row in rows)
        return buffer.getvalue()
    return _table(rows)


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "no results yet\n"
    cells = [[_text(row[column]) for column in TABLE_COLUMNS] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(TABLE_COLUMNS)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(TABLE_COLUMNS, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    ]
    return "\n".join(lines) + "\n"
