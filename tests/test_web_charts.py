"""The dashboard's chart geometry: bars and time ticks where their local hours and days are."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from watcher.web.charts import stacked_chart, window


@pytest.mark.parametrize("zone_name", ["UTC", "Europe/London", "Asia/Kolkata", "Asia/Kathmandu"])
def test_an_hours_tick_sits_where_its_bar_begins(zone_name: str) -> None:
    zone = ZoneInfo(zone_name)
    start, end, unit = window(datetime(2026, 11, 29, 10, 41, tzinfo=UTC), days=1, zone=zone)
    local_three = end.replace(hour=3)  # 03:00 on the window's last day, in the site's zone
    rows = [{"hour": local_three.isoformat(), "female": 3, "male": 1, "failed": 0}]
    chart = stacked_chart("cam-07", rows, start=start, end=end, unit=unit, zone=zone)
    (tick,) = [tick for tick in chart.x_ticks if tick.label == "03:00"]
    assert tick.position == chart.bars[0].x
