"""`cctv-gender backfill ARCHIVE`, in-process: one row per file, a broken file a failed row, the
archive untouched (bytes and times), and a rerun (or a run cut short) adding nothing twice; on
SQLite and PostgreSQL. The Ray path's own tests are in tests/test_backfill_ray.py."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pytest

from model.synthetic import write_bmp
from tests.helpers import query_url
from watcher.backfill import archive as archive_module
from watcher.commands.main import main
from watcher.intake.discovery import scan_inbox

FRAMES = 24


def make_archive(root: Path, *, frames: int = FRAMES) -> Path:
    """Frames from three cameras with file times a day apart, a broken file, and names the inbox
    would skip (hidden, temporary, not .bmp)."""
    for index in range(frames):
        path = write_bmp(root / f"cam-{index % 3}" / f"{index:03d}.BMP" if index == 5 else
                         root / f"cam-{index % 3}" / f"{index:03d}.bmp", seed=index)  # fmt: skip
        stamp = datetime(2024, 3, 1 + index % 3, 12, tzinfo=UTC).timestamp()
        os.utime(path, (stamp, stamp))
    (root / "cam-0" / "broken.bmp").write_bytes(b"BM" + b"\0" * 40)
    (root / "cam-0" / ".hidden.bmp").write_bytes(b"x")
    (root / "cam-0" / "partial.bmp.part").write_bytes(b"x")
    (root / "cam-0" / "notes.txt").write_text("not a frame")
    return root


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file's bytes, modification time and inode change time (a rename or chmod moves it)."""
    return {
        str(path.relative_to(root)): (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ctime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def rows(url: str) -> list[tuple[str, str, str | None]]:
    return sorted(query_url(url, "SELECT source_path, status, error FROM results"))


def test_each_file_once_and_the_archive_untouched(
    make_config: Callable[..., Path], tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = make_archive(tmp_path / "archive")
    before = snapshot(archive)
    config = make_config(database={"url": database_url})
    command = ["backfill", str(archive), "--config", str(config)]

    assert main(command) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"backfill: {FRAMES + 1} files, {FRAMES} ok, 1 failed, 0 skipped as already done, [\d.]+ frames/s",
        summary,
    ), summary
    stored = rows(database_url)
    assert len(stored) == FRAMES + 1 and len({path for path, _, _ in stored}) == FRAMES + 1
    failed = [row for row in stored if row[1] == "failed"]
    assert [path for path, _, error in failed] == ["cam-0/broken.bmp"] and failed[0][2]
    assert snapshot(archive) == before
    (source,) = {row[0] for row in query_url(database_url, "SELECT source FROM results")}
    assert source == f"archive:{archive.resolve()}"
    stored_paths = {row[0] for row in query_url(database_url, "SELECT stored_path FROM results")}
    assert str(archive / "cam-2" / "005.BMP") in stored_paths  # where it lies: never moved

    # Again: nothing new, nothing read.
    assert main(command) == 0
    assert "0 ok, 0 failed, 25 skipped as already done" in capsys.readouterr().out
    assert rows(database_url) == stored and snapshot(archive) == before


def test_a_rewritten_file_is_a_new_frame_and_a_cut_run_finishes_on_rerun(
    make_config: Callable[..., Path], tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = make_archive(tmp_path / "archive", frames=10)
    config = make_config(database={"url": database_url})
    # A run that stored only some rows (cut short): simulate with --until on the file times.
    assert main(["backfill", str(archive), "--until", "2024-03-02", "--config", str(config)]) == 0
    assert len(rows(database_url)) == 4  # the frames written on March 1st
    assert main(["backfill", str(archive), "--config", str(config)]) == 0
    assert len(rows(database_url)) == 11
    write_bmp(archive / "cam-1" / "001.bmp", seed=99)  # new content, new time
    assert main(["backfill", str(archive), "--config", str(config)]) == 0
    assert "1 ok, 0 failed, 10 skipped" in capsys.readouterr().out.splitlines()[-1]
    assert len(rows(database_url)) == 12


def test_the_archive_is_listed_as_it_is_worked_through(
    make_config: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every file was listed (and kept, a Path and a stat each) before the first was read: an
    archive of millions of frames sat in memory. The listing now streams, a lookup chunk at a
    time: rows are stored before it ends, and the counts, the rows and a rerun are as before."""
    archive = make_archive(tmp_path / "archive")
    config = make_config()
    url = f"sqlite:///{tmp_path / 'data' / 'results.sqlite3'}"
    monkeypatch.setattr(archive_module, "LOOKUP_CHUNK", 4)
    stored_when_listed: list[int] = []

    def listing(folder: Path) -> Iterator[PurePosixPath]:
        yield from scan_inbox(folder)
        database = tmp_path / "data" / "results.sqlite3"
        stored_when_listed.append(len(rows(url)) if database.exists() else 0)

    monkeypatch.setattr(archive_module, "scan_inbox", listing)
    command = ["backfill", str(archive), "--config", str(config)]
    assert main(command) == 0
    assert f"{FRAMES + 1} files, {FRAMES} ok, 1 failed, 0 skipped" in capsys.readouterr().out
    assert stored_when_listed[0] > 0, "nothing was stored before the listing ended"
    stored = rows(url)
    assert len(stored) == FRAMES + 1 and len({path for path, _, _ in stored}) == FRAMES + 1
    assert main([*command, "--dry-run"]) == 0
    assert f"would classify 1 of {FRAMES + 1} files" in capsys.readouterr().out  # the broken one
    assert main(command) == 0
    assert f"0 ok, 0 failed, {FRAMES + 1} skipped as already done" in capsys.readouterr().out
    assert rows(url) == stored


def test_dry_run_and_time_window(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = make_archive(tmp_path / "archive", frames=9)
    config = make_config()
    window = ["--since", "2024-03-02", "--until", "2024-03-03"]
    assert main(["backfill", str(archive), "--dry-run", *window, "--config", str(config)]) == 0
    assert "would classify 3 of 3 files" in capsys.readouterr().out
    assert not (tmp_path / "data" / "results.sqlite3").exists()  # a dry run writes nothing


def test_the_inbox_is_not_an_archive(make_config: Callable[..., Path], tmp_path: Path) -> None:
    config = make_config()
    (tmp_path / "inbox" / "cam").mkdir(parents=True)
    with pytest.raises(SystemExit) as stopped:
        main(["backfill", str(tmp_path / "inbox" / "cam"), "--config", str(config)])
    assert stopped.value.code == 2


def test_a_half_written_file_fails_then_its_finished_self_replaces_the_failure(
    make_config: Callable[..., Path], tmp_path: Path, database_url: str
) -> None:
    archive = make_archive(tmp_path / "archive", frames=3)
    whole = (archive / "cam-0" / "000.bmp").read_bytes()
    live = archive / "cam-1" / "live.bmp"
    live.write_bytes(whole[: len(whole) // 2])  # a writer is still busy with it
    config = make_config(database={"url": database_url})
    assert main(["backfill", str(archive), "--config", str(config)]) == 0
    assert ("cam-1/live.bmp", "failed") in {(path, status) for path, status, _ in rows(database_url)}
    live.write_bytes(whole)
    assert main(["backfill", str(archive), "--config", str(config)]) == 0
    assert [status for path, status, _ in rows(database_url) if path == "cam-1/live.bmp"] == ["ok"]


def test_an_ok_row_that_cannot_be_stored_leaves_the_failed_row_it_would_replace(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The failed rows an `ok` row replaces were deleted in a transaction of their own before it
    was inserted: an insert that then failed (or a kill between the two) left the file no row at
    all. Now both are one transaction; a real SQLite file refuses the new row with a trigger."""
    archive = make_archive(tmp_path / "archive", frames=3)
    whole = (archive / "cam-0" / "000.bmp").read_bytes()
    live = archive / "cam-1" / "live.bmp"
    live.write_bytes(whole[: len(whole) // 2])
    config = make_config()
    database = tmp_path / "data" / "results.sqlite3"
    url = f"sqlite:///{database}"
    assert main(["backfill", str(archive), "--config", str(config)]) == 0
    live.write_bytes(whole)
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        connection.execute(
            "CREATE TRIGGER refuse_live BEFORE INSERT ON results WHEN NEW.source_path = 'cam-1/live.bmp' "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    capsys.readouterr()

    assert main(["backfill", str(archive), "--config", str(config)]) == 0
    assert "0 ok, 1 failed" in capsys.readouterr().out
    assert [status for path, status, _ in rows(url) if path == "cam-1/live.bmp"] == ["failed"]
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        connection.execute("DROP TRIGGER refuse_live")
    assert main(["backfill", str(archive), "--config", str(config)]) == 0
    assert [status for path, status, _ in rows(url) if path == "cam-1/live.bmp"] == ["ok"]


def test_a_name_that_is_not_utf8_gets_its_row(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "archive"
    folder = Path(os.fsdecode(bytes(archive / "caf") + b"\xe9"))  # Latin-1 bytes, not UTF-8
    write_bmp(folder / os.fsdecode(b"fr\xe9d.bmp"), seed=1)
    config = make_config()
    assert main(["backfill", str(archive), "--config", str(config)]) == 0
    assert "1 ok, 0 failed" in capsys.readouterr().out
    assert rows(f"sqlite:///{tmp_path / 'data' / 'results.sqlite3'}") == [
        ("caf\\xe9/fr\\xe9d.bmp", "ok", None)
    ]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param(
            ["--since", "2024-03-03", "--until", "2024-03-01"], "must be before", id="since_after_until"
        ),
        pytest.param(["--actors", "2"], "--actors is for --ray", id="actors_without_ray"),
    ],
)
def test_arguments_that_do_not_go_together(
    make_config: Callable[..., Path], tmp_path: Path, arguments: list[str], message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    archive = make_archive(tmp_path / "archive", frames=1)
    with pytest.raises(SystemExit) as stopped:
        main(["backfill", str(archive), *arguments, "--config", str(make_config())])
    assert stopped.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("holds", ["inbox", "processed", "data"])
def test_a_folder_holding_the_sites_own_folders_is_not_an_archive(
    make_config: Callable[..., Path], tmp_path: Path, holds: str
) -> None:
    config = make_config()
    (tmp_path / holds).mkdir(exist_ok=True)
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "results.sqlite3").touch()
    with pytest.raises(SystemExit) as stopped:
        main(["backfill", str(tmp_path), "--config", str(config)])  # holds inbox/, processed/, data/
    assert stopped.value.code == 2


def test_no_cluster_at_the_address_is_one_line_at_once(
    make_config: Callable[..., Path], tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = make_archive(tmp_path / "archive", frames=1)
    config = make_config(database={"url": postgres_url})
    assert main(["backfill", str(archive), "--ray", "127.0.0.1:1", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cctv-gender: error: no Ray cluster at 127.0.0.1:1"), err


@pytest.mark.parametrize(
    "address",
    [
        pytest.param(":6379", id="no_host"),
        pytest.param("[]:6379", id="empty_brackets"),
        pytest.param("head", id="no_port"),
        pytest.param("head:", id="empty_port"),
        pytest.param("head:redis", id="port_not_a_number"),
        pytest.param("head:0", id="port_zero"),
        pytest.param("head:65536", id="port_too_high"),
    ],
)
def test_an_address_that_is_not_host_port_is_a_usage_error(
    make_config: Callable[..., Path], tmp_path: Path, address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--ray :6379` was refused only once the command ran, exit 1 like an unreachable cluster: a
    mistyped option is a usage error (exit 2), one line naming --ray, before the config is read."""
    archive = make_archive(tmp_path / "archive", frames=1)
    config = make_config(database={"url": "postgresql://nobody@127.0.0.1:1/never-opened"})
    with pytest.raises(SystemExit) as stopped:
        main(["backfill", str(archive), "--ray", address, "--config", str(config)])
    err = capsys.readouterr().err
    assert stopped.value.code == 2, err
    assert err.startswith(f"cctv-gender backfill: error: argument --ray: {address}: use local, auto, or"), err
    assert err.count("\n") == 1, err


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("cluster..local:6379", id="empty_label"),
        pytest.param(f"{'h' * 64}:6379", id="label_too_long"),
    ],
)
def test_a_host_name_that_cannot_be_one_is_one_line(
    make_config: Callable[..., Path], tmp_path: Path, address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo like a doubled dot failed inside the IDNA codec (UnicodeError): a traceback."""
    archive = make_archive(tmp_path / "archive", frames=1)
    config = make_config(database={"url": "postgresql://nobody@127.0.0.1:1/never-opened"})
    assert main(["backfill", str(archive), "--ray", address, "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err == f"cctv-gender: error: no Ray cluster at {address}: {address[:-5]} is not a host name\n", err


def test_a_dry_run_on_a_database_it_cannot_read_says_so(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dry run used to take any error opening the database for "not migrated yet" and report
    every file as still to do (0 already done), where the real run fails."""
    archive = make_archive(tmp_path / "archive", frames=3)
    config = make_config()
    database = tmp_path / "data" / "results.sqlite3"
    database.parent.mkdir()
    database.touch()  # empty: not migrated yet, so nothing done
    assert main(["backfill", str(archive), "--dry-run", "--config", str(config)]) == 0
    assert "would classify 4 of 4 files" in capsys.readouterr().out
    database.write_bytes(b"not a database " * 512)
    assert main(["backfill", str(archive), "--dry-run", "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("cctv-gender: error: cannot open the database"), (out, err)


def test_a_file_put_back_as_it_was_is_not_read_again(
    make_config: Callable[..., Path], tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A path with two `ok` rows (its file rewritten once) was judged by whichever row the query
    gave last: a file put back as it first was (a restore with its time, `cp -p`) was read again on
    every run, and a dry run counted it as still to do."""
    archive = tmp_path / "archive"
    first = write_bmp(archive / "cam-0" / "a.bmp", seed=1).read_bytes()
    write_bmp(archive / "cam-0" / "b.bmp", seed=2)
    config = make_config(database={"url": database_url})
    command = ["backfill", str(archive), "--config", str(config)]
    stamp = datetime(2024, 3, 1, 12, tzinfo=UTC).timestamp()
    os.utime(archive / "cam-0" / "a.bmp", (stamp, stamp))
    assert main(command) == 0
    write_bmp(archive / "cam-0" / "a.bmp", seed=3)  # rewritten: new content, new time
    assert main(command) == 0
    (archive / "cam-0" / "a.bmp").write_bytes(first)  # put back as it was
    os.utime(archive / "cam-0" / "a.bmp", (stamp, stamp))
    capsys.readouterr()

    assert main([*command, "--dry-run"]) == 0
    assert "would classify 0 of 2 files" in capsys.readouterr().out
    assert main(command) == 0
    assert "0 ok, 0 failed, 2 skipped as already done" in capsys.readouterr().out
    assert len(rows(database_url)) == 3


def test_a_file_time_past_the_year_9999_is_left_out_with_a_warning(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """tmpfs, XFS and NAS shares hold times Python's datetime cannot: listing the archive raised
    ValueError, a traceback for the whole backfill (and its dry run) over one file."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("needs a writable tmpfs at /dev/shm")
    with tempfile.TemporaryDirectory(dir=shm) as folder:
        archive = Path(folder)
        write_bmp(archive / "cam" / "ok.bmp", seed=1)
        future = write_bmp(archive / "cam" / "future.bmp", seed=2)
        os.utime(future, (1e12, 1e12))  # the year 33658
        if future.stat().st_mtime != 1e12:
            pytest.skip("this tmpfs cannot hold the time")
        assert main(["backfill", str(archive), "--config", str(make_config())]) == 0
    out, err = capsys.readouterr()
    assert "backfill: 1 files, 1 ok, 0 failed" in out
    assert f"left out {future}: its file time cannot be read as a date" in err
