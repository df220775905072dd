"""A row the database refuses (a value its column cannot hold) fails that frame alone.

The refusal is injected: SQLite accepts any value in any column, so no real frame's row can be
refused by it. The DataError raised is the driver error SQLAlchemy raises for PostgreSQL's
"value too long", and it goes through the store's own boundary (watcher.store.session).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from sqlalchemy import Connection
from sqlalchemy.exc import DataError

from model.synthetic import write_bmp
from tests.helpers import files_under, query
from watcher.config import load_config
from watcher.intake.claim_names import parse_claimed_name
from watcher.pipeline.assembly import build_daemon
from watcher.store import writes
from watcher.store.errors import StorageFailed
from watcher.store.records import ResultRecord

Insert = Callable[[Connection, Iterable[ResultRecord]], set[str]]


def _refusing(refuse: Callable[[ResultRecord], bool]) -> Insert:
    original = writes.insert_new_rows

    def insert(connection: Connection, records: Iterable[ResultRecord]) -> set[str]:
        records = list(records)
        if any(refuse(record) for record in records):
            raise DataError("INSERT INTO results ...", {}, Exception("value too long for type character"))
        return original(connection, records)

    return insert


def _run_once(make_config: Callable[..., Path]) -> Any:
    return build_daemon(load_config(make_config()), stop=threading.Event()).run(once=True)


def test_a_refused_row_fails_its_frame_alone(
    make_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a.bmp", "bad.bmp", "c.bmp"):
        write_bmp(tmp_path / "inbox" / "cam" / name, seed=len(name))
    # The frame's full row is refused; the bare failed row that replaces it (no hash) is not.
    refused = _refusing(lambda row: row.source_path.endswith("bad.bmp") and row.sha256 is not None)
    monkeypatch.setattr(writes, "insert_new_rows", refused)

    report = _run_once(make_config)

    assert (report.ok, report.failed) == (2, 1)
    database = tmp_path / "data" / "results.sqlite3"
    rows = query(database, "SELECT source_path, status, error, stored_path FROM results")
    by_source = {source: (status, error, stored) for source, status, error, stored in rows}
    assert by_source["cam/a.bmp"][0] == by_source["cam/c.bmp"][0] == "ok"
    status, error, stored = by_source["cam/bad.bmp"]
    assert status == "failed" and error.startswith("cannot store its row: DataError: value too long")
    assert Path(stored).is_file() and Path(stored).parent == tmp_path / "failed"
    assert files_under(tmp_path / "processed") == ["cam/a.bmp", "cam/c.bmp"]


def test_a_bare_row_refused_too_stops_with_every_frame_still_claimed(
    make_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a.bmp", "bad.bmp"):
        write_bmp(tmp_path / "inbox" / "cam" / name, seed=len(name))
    monkeypatch.setattr(writes, "insert_new_rows", _refusing(lambda r: "bad" in r.source_path))

    with pytest.raises(StorageFailed):
        _run_once(make_config)

    # No file moved without its row: the frame at fault stays claimed for the next start.
    assert files_under(tmp_path / "failed") == []
    claimed = files_under(tmp_path / "inbox" / ".in-progress")
    assert any(
        (parsed := parse_claimed_name(PurePosixPath(path).name)) and parsed[1] == PurePosixPath("cam/bad.bmp")
        for path in claimed
    )
    rows = query(tmp_path / "data" / "results.sqlite3", "SELECT source_path FROM results")
    assert ("cam/bad.bmp",) not in rows
