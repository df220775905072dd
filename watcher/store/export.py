"""`cctv-gender results`: filtered rows as a table, CSV, JSON or JSON Lines, streamed.

Field names are stable (they are the `results` columns); times are ISO 8601 in UTC.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import datetime
from enum import StrEnum
from typing import Any, TextIO

from sqlalchemy import Engine, select

from watcher.store.queries import ResultFilter
from watcher.store.schema import Result
from watcher.store.session import translated_errors
from watcher.wording import NO_CAMERA

# Columns in the order operators read them; all of them go to CSV, JSON and JSON Lines.
ALL_COLUMNS = (
    "id", "processed_at", "camera", "source_path", "label", "probability", "status", "error",
    "model_version", "precision", "width", "height", "size_bytes", "sha256", "file_mtime", "received_at",
    "stored_path", "frame_key", "source",
)  # fmt: skip
TABLE_COLUMNS = (
    "id", "processed_at", "camera", "source_path", "label", "probability", "status", "model_version", "error",
)  # fmt: skip
# Rows fetched from the database at a time while streaming an export.
STREAM_CHUNK = 1000
# What a spreadsheet takes for the start of a formula (OWASP's list for CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class OutputFormat(StrEnum):
    TABLE = "table"
    CSV = "csv"
    JSON = "json"
    JSONL = "jsonl"


def iter_results(engine: Engine, *, filters: ResultFilter, limit: int | None) -> Iterator[dict[str, Any]]:
    """Matching rows, newest first, fetched in chunks so a million rows never sit in memory."""
    statement = filters.apply(select(*(getattr(Result, column) for column in ALL_COLUMNS)))
    statement = statement.order_by(Result.id.desc())
    if limit is not None:
        statement = statement.limit(limit)
    with translated_errors(), engine.connect() as connection:
        result = connection.execution_options(yield_per=STREAM_CHUNK).execute(statement)
        for row in result:
            yield dict(zip(ALL_COLUMNS, row, strict=True))


def write_results(
    rows: Iterator[dict[str, Any]],
    out: TextIO,
    *,
    output_format: OutputFormat,
    columns: tuple[str, ...] = ALL_COLUMNS,
    table_columns: tuple[str, ...] = TABLE_COLUMNS,
    spreadsheet_safe: bool = False,
) -> int:
    """Write rows in the chosen format as they come; returns how many were written. Text is
    written as stored, unless `spreadsheet_safe` (CSV only) marks formula-like cells as text."""
    count = 0
    if output_format == OutputFormat.TABLE:
        materialised = list(rows)  # column widths need every row (the table is for a screen's worth)
        out.write(_table(materialised, table_columns))
        return len(materialised)
    if output_format == OutputFormat.CSV:
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {key: _csv_cell(value, spreadsheet_safe=spreadsheet_safe) for key, value in row.items()}
            )
            count += 1
        return count
    if output_format == OutputFormat.JSONL:
        for row in rows:
            out.write(json.dumps(json_row(row)) + "\n")
            count += 1
        return count
    out.write("[")
    for row in rows:
        out.write(("\n  " if count == 0 else ",\n  ") + json.dumps(json_row(row)))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


def as_spreadsheet_text(text: str) -> str:
    """A cell a spreadsheet would run as a formula (a camera folder named `=cmd|' /C calc'!A0`),
    given a leading apostrophe, which spreadsheets read as "this is text" and do not show."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _csv_cell(value: Any, *, spreadsheet_safe: bool) -> str:
    text = _text(value, precise=True)
    # Only text: a number is never run, and a negative one must stay a number.
    return as_spreadsheet_text(text) if spreadsheet_safe and isinstance(value, str) else text


def iso_utc(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds")


def json_row(row: dict[str, Any]) -> dict[str, Any]:
    return {key: iso_utc(value) if isinstance(value, datetime) else value for key, value in row.items()}


def _text(value: Any, *, precise: bool = False) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return iso_utc(value) if precise else value.isoformat(timespec="seconds")
    if isinstance(value, float):
        return repr(value) if precise else f"{value:.4f}"
    return str(value)


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    if not rows:
        return "no results\n"
    # For people: a frame without a camera says so, as the web does (CSV and JSON keep it empty).
    cells = [[NO_CAMERA if column == "camera" and row[column] is None else _text(row[column])
              for column in columns] for row in rows]  # fmt: skip
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * width for width in widths))
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    ]
    return "\n".join(lines) + "\n"
