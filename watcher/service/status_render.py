"""`status` output: a screenful of text, or JSON for monitoring (the report's fields as keys)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict

from watcher.service.status_health import instance_state
from watcher.service.status_report import RECENTLY_TEXT, InstanceView, StatusReport


def render_status(status: StatusReport, *, output_format: str) -> str:
    if output_format == "json":
        return json.dumps(asdict(status), indent=2) + "\n"
    age = status.last_batch_age_s
    health = "ok" if status.healthy else "UNHEALTHY: " + "; ".join(status.problems)
    daemon = f"running ({', '.join(status.instances)})" if status.running else "not running"
    lines = [
        f"health:              {health}",
        f"daemon:              {daemon}",
        f"model:               {status.model_version}",
        f"waiting in inbox:    {status.waiting}",
        f"in progress:         {status.in_progress}",
        f"processed last hour: {status.processed_last_hour}",
        f"failed last hour:    {status.failed_last_hour}",
        f"frames/s (recent):   {status.frames_per_s}",
        f"last batch:          {'never' if age is None else f'{age:.0f} s ago'}",
    ]
    if status.instances_seen:
        lines += ["", f"instances seen in the last {RECENTLY_TEXT}:", _instance_table(status.instances_seen)]
    return "\n".join(lines) + "\n"


def _instance_table(seen: Sequence[InstanceView]) -> str:
    header = (
        "instance", "host", "pid", "state", "last seen", "claimed", "ok", "failed", "frames/s", "crashes",
    )  # fmt: skip
    rows = [
        (
            item.name,
            item.host or "?",
            str(item.pid or "?"),
            instance_state(item),
            "?" if item.last_seen_s is None else f"{item.last_seen_s:.0f} s ago",
            str(item.claimed),
            _or_unknown(item.frames_ok),
            _or_unknown(item.frames_failed),
            _or_unknown(item.frames_per_s),
            _crashes(item),
        )
        for item in seen
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def _or_unknown(value: float | None) -> str:
    return "?" if value is None else str(value)


def _crashes(item: InstanceView) -> str:
    if item.crashes is None:
        return "?"
    if item.last_crash_s is None:
        return str(item.crashes)
    return f"{item.crashes} (last {item.last_crash_s:.0f} s ago)"
