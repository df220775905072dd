"""Time as operators mean it: `today` and hours in the site's zone (display.timezone), and
summaries by when frames were captured, so a backfill lands in the hours its frames were taken."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.helpers import seed_results
from watcher.commands.main import main
from watcher.times import parse_time


@pytest.mark.parametrize(
    ("word", "zone", "expected"),
    [
        # 02:00 UTC on the 26th is 21:00 on the 25th in New York (UTC-5).
        pytest.param("today", "America/New_York", "2026-11-25T05:00:00+00:00", id="today_behind_utc"),
        pytest.param("yesterday", "America/New_York", "2026-11-24T05:00:00+00:00", id="yesterday_behind_utc"),
        pytest.param("today", "Asia/Kolkata", "2026-11-25T18:30:00+00:00", id="today_half_hour_zone"),
        pytest.param("today", "UTC", "2026-11-26T00:00:00+00:00", id="today_utc"),
        pytest.param("2026-11-20T08:00", "Europe/Berlin", "2026-11-20T07:00:00+00:00", id="naive_is_local"),
        pytest.param(
            "2026-11-20T08:00Z", "Europe/Berlin", "2026-11-20T08:00:00+00:00", id="explicit_zone_kept"
        ),
    ],
)
def test_words_and_naive_times_are_the_sites(word: str, zone: str, expected: str) -> None:
    now = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    assert parse_time(word, now=now, zone=ZoneInfo(zone)).isoformat() == expected


def _summary(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    assert main(["summary", "--config", str(config), "--format", "json", *args]) == 0
    rows: list[dict[str, object]] = json.loads(capsys.readouterr().out)
    return rows


def _row(at: datetime, label: str, probability: float) -> dict[str, object]:
    return {"at": at, "camera": "c", "label": label, "probability": probability}


def test_the_hour_repeated_by_a_daylight_saving_change_stays_two_hours(
    make_config: Callable[..., Path], tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # London leaves summer time at 01:00 UTC on 2026-10-25: 01:10 local happens twice.
    (tmp_path / "data").mkdir()
    seed_results(
        database_url,
        [
            _row(datetime(2026, 10, 25, 0, 10, tzinfo=UTC), "female", 0.9),
            _row(datetime(2026, 10, 25, 1, 10, tzinfo=UTC), "male", 0.7),
            _row(datetime(2026, 10, 25, 1, 50, tzinfo=UTC), "male", 0.8),
        ],
    )
    config = make_config(database={"url": database_url}, display={"timezone": "Europe/London"})
    rows = _summary(config, capsys, "--by", "hour")
    assert [(row["hour"], row["total"], row["male"]) for row in rows] == [
        ("2026-10-25T01:00:00+01:00", 1, 0),
        ("2026-10-25T01:00:00+00:00", 2, 2),
    ]
    assert rows[1]["mean_probability"] == 0.75
    (day,) = _summary(config, capsys, "--by", "day")
    assert (day["day"], day["total"]) == ("2026-10-25", 3)


def test_summaries_follow_the_capture_time_unless_asked(
    make_config: Callable[..., Path], tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A backfill: frames taken on three days, all processed on the 26th.
    (tmp_path / "data").mkdir()
    processed = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    seed_results(database_url, [
        {"at": processed, "file_mtime": datetime(2026, 11, day, 9, 0, tzinfo=UTC), "camera": "c",
         "label": "female", "probability": 0.9}
        for day in (20, 21, 21)
    ] + [{"at": processed, "camera": "c", "label": "male", "probability": 0.9}])  # no file time  # fmt: skip
    config = make_config(database={"url": database_url}, display={"timezone": "Asia/Kolkata"})
    captured = _summary(config, capsys, "--by", "day")
    assert [(row["day"], row["total"]) for row in captured] == [
        ("2026-11-20", 1),
        ("2026-11-21", 2),
        ("2026-11-26", 1),
    ]
    by_processing = _summary(config, capsys, "--by", "day", "--time", "processed")
    assert [(row["day"], row["total"]) for row in by_processing] == [("2026-11-26", 4)]
    # --since follows the chosen time too; the naive date is Kolkata's midnight (18:30 UTC before).
    since = _summary(config, capsys, "--since", "2026-11-21", "--until", "2026-11-22")
    assert [row["total"] for row in since] == [2]
    assert main(["results", "--config", str(config), "--format", "json", "--time", "captured",
                 "--until", "2026-11-21"]) == 0  # fmt: skip
    assert [row["id"] for row in json.loads(capsys.readouterr().out)] == [1]


def test_the_plot_draws_female_and_male_per_camera(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "data" / "results.sqlite3"
    database.parent.mkdir()
    rows = [
        {"at": datetime(2026, 11, day, hour, tzinfo=UTC), "camera": f"cam-{hour % 3}",
         "label": ("female", "male")[hour % 2], "probability": 0.8}
        for day in range(1, 31) for hour in range(0, 24, 5)
    ]  # fmt: skip
    seed_results(f"sqlite:///{database}", rows)
    config = make_config()
    for by in ("hour", "day"):
        plot = tmp_path / f"plot-{by}.png"
        assert main(["summary", "--config", str(config), "--by", by, "--plot", str(plot)]) == 0
        from PIL import Image

        with Image.open(plot) as image:
            width, height = image.size
            colours = {colour for _, colour in image.convert("RGB").getcolors(maxcolors=1 << 20) or []}
        assert width >= 1000 and height > 3 * 200  # three camera panels
        assert (0xC2, 0x18, 0x5B) in colours and (0x19, 0x76, 0xD2) in colours  # female and male bars
    capsys.readouterr()
