"""`cctv-gender results` filters and exports, `summary`, the v_results view, bad input."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.helpers import query_url, seed_results
from watcher.commands.main import main
from watcher.store.engine import make_engine
from watcher.store.export import (
    ALL_COLUMNS,
    FORMULA_STARTS,
    OutputFormat,
    as_spreadsheet_text,
    write_results,
)
from watcher.wording import NO_CAMERA

BASE = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


@pytest.fixture
def seeded(make_config: Callable[..., Path], tmp_path: Path, database_url: str) -> Path:
    # Every query test runs on SQLite and on PostgreSQL: the same commands, the same answers.
    config = make_config(database={"url": database_url})
    (tmp_path / "data").mkdir()
    seed_results(
        database_url,
        [
            {"at": BASE, "camera": "cam-07", "label": "female", "probability": 0.9},
            {"at": BASE + timedelta(minutes=30), "camera": "cam-07", "label": "male", "probability": 0.6},
            {
                "at": BASE + timedelta(hours=1, minutes=5),
                "camera": "cam-07",
                "label": "male",
                "probability": 0.8,
            },
            {
                "at": BASE + timedelta(hours=1),
                "camera": "cam-01",
                "label": "female",
                "probability": 0.7,
                "model": "v2",
            },
            {"at": BASE + timedelta(hours=3), "camera": "cam-01", "status": "failed"},
            {"at": BASE - timedelta(days=1), "camera": None, "label": "male", "probability": 0.55},
        ],
    )
    return config


def _run(config: Path, *args: str) -> int:
    return main([*args, "--config", str(config)])


def _json(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return rows


@pytest.mark.parametrize(
    ("arguments", "expected_ids"),
    [
        pytest.param([], [6, 5, 4, 3, 2, 1], id="everything_newest_first"),
        pytest.param(["--camera", "cam-07"], [3, 2, 1], id="one_camera"),
        pytest.param(["--camera", "cam-07", "--camera", "cam-01"], [5, 4, 3, 2, 1], id="two_cameras"),
        pytest.param(
            ["--since", "2026-11-25T08:30", "--until", "2026-11-25T10:00"], [4, 3, 2], id="time_range"
        ),
        pytest.param(["--label", "male"], [6, 3, 2], id="label"),
        pytest.param(["--min-probability", "0.75"], [3, 1], id="min_probability"),
        pytest.param(["--status", "failed"], [5], id="failed_only"),
        pytest.param(["--model", "v2"], [4], id="model_version"),
        pytest.param(["--camera", "cam-07", "--limit", "2"], [3, 2], id="limit"),
        # A frame dropped directly in the inbox has no camera: '' asks for it (matched nothing).
        pytest.param(["--camera", ""], [6], id="no_camera"),
        pytest.param(["--camera", "", "--camera", "cam-01"], [6, 5, 4], id="no_camera_and_one"),
    ],
)
def test_results_filters(
    seeded: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], expected_ids: list[int]
) -> None:
    assert _run(seeded, "results", "--format", "json", *arguments) == 0
    assert [row["id"] for row in _json(capsys)] == expected_ids


def test_summary_of_frames_without_a_camera_asks_with_an_empty_name(
    seeded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--camera ''` matched nothing, with the hint `camera  has never been seen (known: ...)`."""
    assert _run(seeded, "summary", "--format", "json", "--camera", "") == 0
    captured = capsys.readouterr()
    assert [(row["camera"], row["total"]) for row in json.loads(captured.out)] == [(None, 1)]
    assert captured.err == ""


def test_a_table_names_frames_without_a_camera_as_the_web_does(
    seeded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The table's camera cell was blank; the dashboard says "(no camera)". CSV and JSON keep the
    true empty value, which no camera folder can be named (a folder may be named "(no camera)")."""
    for command in ("summary", "results"):
        assert _run(seeded, command, "--camera", "") == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].startswith("camera" if command == "summary" else "id"), table
        cells = dict(zip(re.split(r"\s{2,}", table[0]), re.split(r"\s{2,}", table[2]), strict=False))
        assert len(table) == 3 and cells["camera"] == NO_CAMERA, table
        assert _run(seeded, command, "--camera", "", "--format", "csv") == 0
        header, row = capsys.readouterr().out.splitlines()
        assert dict(zip(header.split(","), row.split(","), strict=True))["camera"] == ""
    assert _run(seeded, "summary", "--camera", "", "--format", "jsonl") == 0
    assert json.loads(capsys.readouterr().out)["camera"] is None


def test_relative_times(seeded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(seeded, "results", "--format", "json", "--since", "1h") == 0
    assert _json(capsys) == []  # every seeded row is older than an hour


def test_export_formats_have_stable_fields_and_utc_times(
    seeded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(seeded, "results", "--format", "jsonl", "--camera", "cam-07") == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [tuple(line) for line in lines] == [ALL_COLUMNS] * 3
    assert lines[-1]["processed_at"] == "2026-11-25T08:00:00.000+00:00"

    assert _run(seeded, "results", "--format", "csv", "--status", "failed") == 0
    (row,) = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert tuple(row) == ALL_COLUMNS
    assert row["processed_at"] == "2026-11-25T11:00:00.000+00:00" and row["label"] == ""


def test_exports_are_written_as_rows_arrive() -> None:
    # A failure after two rows: both must already be out (nothing buffered until the end).
    def rows() -> Iterator[dict[str, Any]]:
        for index in range(2):
            yield dict.fromkeys(ALL_COLUMNS) | {"id": index}
        raise RuntimeError("the database went away")

    for output_format in (OutputFormat.JSONL, OutputFormat.CSV, OutputFormat.JSON):
        out = io.StringIO()
        with pytest.raises(RuntimeError):
            write_results(rows(), out, output_format=output_format)
        assert out.getvalue().count('"id": 1') + out.getvalue().count("\n1,") == 1, output_format


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param(["--since", "2026-02-30"], "not a time: '2026-02-30'", id="impossible_date"),
        pytest.param(
            ["--since", "2026-11-26", "--until", "2026-11-25"], "must be before --until", id="reversed"
        ),
        pytest.param(["--min-probability", "1.5"], "must be between 0 and 1", id="probability"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    seeded: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    for command in ("results", "summary"):
        with pytest.raises(SystemExit) as caught:
            _run(seeded, command, *arguments)
        assert caught.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_an_empty_result_is_fine_and_an_unseen_camera_is_hinted(
    seeded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(seeded, "results", "--camera", "cam-7") == 0
    captured = capsys.readouterr()
    assert captured.out == "no results\n"
    assert "camera cam-7 has never been seen (known: cam-01, cam-07)" in captured.err


# Camera names as folder names may be: any character but NUL and "/" (lone surrogates are
# stored escaped, see watcher.intake.names), escape sequences and bidi overrides included.
_FOLDER_NAMES = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0/"), min_size=1)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(asked=_FOLDER_NAMES)
def test_camera_names_in_the_never_seen_hint_cannot_act_on_the_terminal(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], asked: str
) -> None:
    """Known cameras come from inbox folder names, an asked one may be one (`--camera "$(ls
    inbox)"`): printed raw, `\\x1b[2J` cleared the screen and U+202E reversed the line after it."""
    url = f"sqlite:///{tmp_path / 'data' / 'results.sqlite3'}"
    if not (tmp_path / "data").exists():  # once for every example: the rows never change
        (tmp_path / "data").mkdir()
        seed_results(url, [{"at": BASE, "camera": "\x1b[2Jcam"}, {"at": BASE, "camera": "cam\u202e1"}])
    assume(asked not in ("\x1b[2Jcam", "cam\u202e1"))
    config = make_config(database={"url": url})
    capsys.readouterr()

    assert _run(config, "results", f"--camera={asked}") == 0

    err = capsys.readouterr().err
    assert err.endswith(" has never been seen (known: \\x1b[2Jcam, cam\\u202e1)\n"), err
    assert err[:-1].isprintable(), err
    if asked.isprintable():
        assert f"camera {asked} has never been seen" in err


def test_an_unseen_model_version_is_hinted_like_a_camera(
    seeded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in ("results", "summary"):
        assert _run(seeded, command, "--model", "v3") == 0
        assert "model version v3 has never been seen (known: v1, v2)" in capsys.readouterr().err
    assert _run(seeded, "results", "--model", "v2", "--camera", "cam-7", "--camera", "cam-8") == 0
    err = capsys.readouterr().err
    assert "cameras cam-7, cam-8 have never been seen" in err and "model version" not in err


def test_a_table_cut_by_limit_says_how_many_match(seeded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The count goes through the same filters as the rows, on SQLite and PostgreSQL.
    assert _run(seeded, "results", "--limit", "2") == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("2 of 6 shown")
    assert _run(seeded, "results", "--limit", "1", "--camera", "cam-07", "--label", "male") == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("1 of 2 shown")
    assert _run(seeded, "results", "--limit", "6") == 0
    assert "shown" not in capsys.readouterr().out


def test_summary_by_camera_and_hour(seeded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(seeded, "summary", "--by", "camera,hour", "--since", "2026-11-25", "--format", "json") == 0
    rows = _json(capsys)
    assert [(row["camera"], row["hour"], row["total"]) for row in rows] == [
        ("cam-01", "2026-11-25T09:00:00+00:00", 1),
        ("cam-01", "2026-11-25T11:00:00+00:00", 1),
        ("cam-07", "2026-11-25T08:00:00+00:00", 2),
        ("cam-07", "2026-11-25T09:00:00+00:00", 1),
    ]
    cam07_8h = rows[2]
    assert (cam07_8h["female"], cam07_8h["male"], cam07_8h["failed"]) == (1, 1, 0)
    assert cam07_8h["female_share"] == 0.5 and cam07_8h["mean_probability"] == 0.75
    assert rows[1]["failed"] == 1 and rows[1]["failed_share"] == 1.0 and rows[1]["mean_probability"] is None


def test_summary_by_day_table_and_plot(
    seeded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "counts.png"
    assert _run(seeded, "summary", "--by", "day", "--plot", str(plot)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["day", "total", "female"]
    assert [line.split()[:2] for line in out[2:]] == [["2026-11-24", "1"], ["2026-11-25", "5"]]
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_summary_rejects_unknown_dimensions(seeded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        _run(seeded, "summary", "--by", "camera,week")
    assert (
        caught.value.code == 2
        and "use a comma-separated list of camera, hour, day" in capsys.readouterr().err
    )


def test_the_view_reads_plainly(seeded: Path, database_url: str) -> None:
    engine = make_engine(database_url, busy_timeout_ms=1000)
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT camera, label, probability, processed_utc, day_local, hour_local FROM v_results "
            "WHERE camera = 'cam-07' ORDER BY id"
        ).all()
    engine.dispose()
    assert rows[0][:3] == ("cam-07", "female", 0.9)
    assert str(rows[0][3]).startswith("2026-11-25 08:00:00")  # text on SQLite, a timestamp on PostgreSQL
    assert all(isinstance(row[5], int) and len(str(row[4])) == 10 for row in rows)


def test_rescore_leaves_rows_stored_after_it_started(postgres_url: str) -> None:
    """A row the daemon commits while `rescore` runs (say with a head promoted meanwhile) was
    picked up by a later chunk and relabelled with the head rescore started with, and the count of
    rows left alone went negative. Only the rows there when it started are its to rescore."""
    from dataclasses import dataclass

    from sqlalchemy import text

    from watcher.store.rescoring import rescore_rows

    @dataclass(frozen=True)
    class Scored:
        label: str
        probability: float

    stored = {"embedding": b"\0" * 32, "embedding_model": "clip p/1 torch-fp32", "label": "male"}
    seed_results(postgres_url, [{"at": BASE, **stored}, {"at": BASE, **stored}, {"at": BASE}])
    engine = make_engine(postgres_url, busy_timeout_ms=1000)
    daemon = make_engine(postgres_url, busy_timeout_ms=1000)
    calls: list[int] = []

    def classify(blobs: list[bytes]) -> list[Scored]:
        calls.append(len(blobs))
        if len(calls) > 2:
            return [Scored("female", 0.5) for _ in blobs]
        with daemon.begin() as connection:  # the daemon's commit, while rescore's chunk is open
            connection.execute(
                text(
                    "INSERT INTO results (frame_key, source_path, stored_path, received_at, processed_at,"
                    " status, label, probability, model_version, embedding, embedding_model, source)"
                    " VALUES (:key, 'x.bmp', '/p/x.bmp', :at, :at, 'ok', 'female', 0.9, 'v2', :blob,"
                    " 'clip p/1 torch-fp32', 'inbox')"
                ),
                {"key": f"new-{len(calls)}", "at": BASE, "blob": b"\0" * 32},
            )
        return [Scored("female", 0.5) for _ in blobs]

    report = rescore_rows(
        engine, classify=classify, model_version="v1", embedding_model="clip p/1", since=None, chunk_rows=1
    )
    engine.dispose()
    daemon.dispose()
    assert (report.rescored, report.skipped) == (2, 1)
    versions = query_url(postgres_url, "SELECT model_version FROM results WHERE source = 'inbox' ORDER BY id")
    assert [version for (version,) in versions] == ["v1", "v1", "v1", "v2", "v2"]


@pytest.mark.parametrize(
    ("zone", "since"),
    [
        pytest.param("Asia/Tokyo", "0001-01-01T00:00", id="year_1_east_of_utc"),
        pytest.param("America/New_York", "9999-12-31T23:00", id="year_9999_west_of_utc"),
    ],
)
def test_rescore_since_out_of_range_in_the_sites_zone_is_one_line(
    make_config: Callable[..., Path], capsys: pytest.CaptureFixture[str], zone: str, since: str
) -> None:
    """--since is checked in UTC as it is parsed; read in the site's zone it can leave the years
    1-9999, which rescore (alone of the commands) let out as a ValueError traceback."""
    config = make_config(display={"timezone": zone})
    with pytest.raises(SystemExit) as caught:
        _run(config, "rescore", "--since", since)
    assert caught.value.code == 2
    assert capsys.readouterr().err.startswith(f"cctv-gender rescore: error: --since: out of range: '{since}'")


def test_a_plot_takes_camera_names_as_they_are(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A camera is a folder's name: matplotlib read `$...$` in it as TeX, and one that is not valid
    TeX (`cam$\\frac$1`) ended `summary --plot` in a mathtext traceback."""
    url = f"sqlite:///{tmp_path / 'data' / 'results.sqlite3'}"
    (tmp_path / "data").mkdir()
    seed_results(url, [{"at": BASE, "camera": "cam$\\frac$1", "label": "male", "probability": 0.8}])
    plot = tmp_path / "counts.png"
    assert _run(make_config(database={"url": url}), "summary", "--plot", str(plot)) == 0
    assert plot.read_bytes().startswith(b"\x89PNG") and "cam$\\frac$1" in capsys.readouterr().out


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Tokyo"])
def test_summary_counts_file_times_at_the_ends_of_the_calendar(
    make_config: Callable[..., Path], tmp_path: Path, database_url: str, zone: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A frame whose file says year 1 or 9999 (tmpfs, XFS, a NAS hold such times) has no local
    hour in a zone that carries it to year 0 or 10000: `summary --by hour|day` (and the API's)
    ended in an OverflowError traceback. It is counted, a day inside the calendar."""
    (tmp_path / "data").mkdir()
    ends = [datetime(1, 1, 1, 0, 5, tzinfo=UTC), datetime(9999, 12, 31, 23, 50, tzinfo=UTC), BASE]
    seed_results(
        database_url, [{"at": BASE, "camera": "c", "file_mtime": at, "label": "male"} for at in ends]
    )
    config = make_config(database={"url": database_url}, display={"timezone": zone})
    for unit in ("hour", "day"):
        assert _run(config, "summary", "--by", unit, "--format", "json") == 0
        buckets = _json(capsys)
        assert [row["total"] for row in buckets] == [1, 1, 1]
        assert buckets[0][unit].startswith("0001-01-0") and buckets[2][unit].startswith("9999-12-")


@pytest.mark.parametrize(
    "zone", ["UTC", "America/New_York", "Asia/Tokyo", "Australia/Lord_Howe", "Asia/Kathmandu"]
)
def test_a_plot_with_file_times_at_the_ends_of_the_calendar(
    make_config: Callable[..., Path], tmp_path: Path, zone: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Frames dated year 1 or 9999 (tmpfs, XFS, a NAS hold such times) ended `summary --plot` in a
    traceback: matplotlib's margin, bars and ticks reached year 0 or 10000. The plot is drawn; a
    bar the time axis cannot hold is left out, with one line saying how many frames."""
    url = f"sqlite:///{tmp_path / 'data' / 'results.sqlite3'}"
    (tmp_path / "data").mkdir()
    times = [datetime(1, 1, 1, 0, 5, tzinfo=UTC), datetime(60, 6, 1, tzinfo=UTC), BASE,
             datetime(9999, 12, 20, tzinfo=UTC), datetime(9999, 12, 31, 23, 50, tzinfo=UTC)]  # fmt: skip
    seed_results(url, [{"at": BASE, "camera": "c", "file_mtime": at, "label": "male"} for at in times])
    config = make_config(database={"url": url}, display={"timezone": zone})
    for unit in ("hour", "day"):
        plot = tmp_path / f"{unit}.png"
        assert _run(config, "summary", "--by", unit, "--plot", str(plot), "--format", "json") == 0
        out, err = capsys.readouterr()
        assert sum(row["total"] for row in json.loads(out)) == len(times)
        assert plot.read_bytes().startswith(b"\x89PNG")
        lines = err.splitlines()
        assert lines[0] == f"plot: {plot}", lines
        assert len(lines) == 2 and re.fullmatch(
            r"plot: left out [12] frames dated at the calendar's ends \(year 1 or 9999\), which its time "
            r"axis cannot hold; the summary counts them",
            lines[1],
        ), lines


FORMULA = "=cmd|' /C calc'!A0"


def test_spreadsheet_safe_csv_marks_formulas_as_text(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A camera folder named like a formula was exported raw, and a spreadsheet opening the CSV
    runs it. Raw stays the default (the data as stored); --spreadsheet-safe puts an apostrophe
    before formula-like text, and leaves numbers and other names alone."""
    url = f"sqlite:///{tmp_path / 'data' / 'results.sqlite3'}"
    (tmp_path / "data").mkdir()
    seed_results(url, [{"at": BASE, "camera": FORMULA, "label": "male", "probability": 0.75},
                       {"at": BASE, "camera": "cam-01", "label": "female", "probability": 0.5}])  # fmt: skip
    config = make_config(database={"url": url})

    assert _run(config, "results", "--format", "csv") == 0
    assert {row["camera"] for row in csv.DictReader(io.StringIO(capsys.readouterr().out))} == {
        FORMULA,
        "cam-01",
    }
    assert _run(config, "results", "--format", "csv", "--spreadsheet-safe") == 0
    safe = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {row["camera"] for row in safe} == {"'" + FORMULA, "cam-01"}
    assert {row["source_path"] for row in safe} == {f"'{FORMULA}/0.bmp", "cam-01/1.bmp"}
    assert {row["probability"] for row in safe} == {"0.75", "0.5"} and all(
        row["id"].isdigit() for row in safe
    )
    assert _run(config, "summary", "--format", "csv", "--spreadsheet-safe") == 0
    summary = csv.DictReader(io.StringIO(capsys.readouterr().out))
    assert {row["camera"] for row in summary} == {"cam-01", "'" + FORMULA}


@pytest.mark.parametrize("command", ["results", "summary"])
def test_spreadsheet_safe_is_for_csv(
    make_config: Callable[..., Path], command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        _run(make_config(), command, "--format", "json", "--spreadsheet-safe")
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1, err
    assert "--spreadsheet-safe is for --format csv, not --format json" in err


@hypothesis.given(st.text(max_size=20))
def test_spreadsheet_text_never_starts_a_formula(text: str) -> None:
    safe = as_spreadsheet_text(text)
    assert not safe.startswith(FORMULA_STARTS)
    assert safe == text or safe == "'" + text


def test_a_camera_given_as_its_folders_own_bytes(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder name that is not UTF-8, passed as its bytes (`--camera "$(ls inbox)"`), reached
    the driver as a str with lone surrogates: a UnicodeEncodeError traceback. It matches its rows,
    which store it as `caf\\xe9`; a --model so given is only never seen."""
    url = f"sqlite:///{tmp_path / 'data' / 'results.sqlite3'}"
    (tmp_path / "data").mkdir()
    seed_results(url, [{"at": BASE, "camera": "caf\\xe9", "label": "male"}, {"at": BASE, "camera": "cafe"}])
    config = make_config(database={"url": url})
    for typed in (os.fsdecode(b"caf\xe9"), "caf\\xe9"):
        assert _run(config, "results", "--camera", typed, "--format", "json") == 0
        assert [row["camera"] for row in _json(capsys)] == ["caf\\xe9"]
    assert _run(config, "summary", "--model", os.fsdecode(b"v\xff")) == 0
    captured = capsys.readouterr()
    assert captured.out == "no results\n" and "model version v\\xff has never been seen" in captured.err
