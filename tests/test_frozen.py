"""The per-frame records are frozen where it is checked (watcher.frozen): the type checker refuses
any assignment to their fields, and at run time they compare and hash by their fields, as frozen
dataclasses do."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from watcher.intake.claimed import claimed_frame
from watcher.store.records import ResultRecord

REPO = Path(__file__).resolve().parent.parent

# One assignment to a field of each class made for every frame (module, class, field): mypy must
# refuse every one.
_ASSIGNMENTS = [
    ("watcher.intake.claimed", "ClaimedFrame", "key"),
    ("watcher.pipeline.file_work", "Move", "stored"),
    ("watcher.pipeline.file_work", "ClaimOutcome", "refused"),
    ("watcher.pipeline.stages", "FileFacts", "sha256"),
    ("watcher.pipeline.stages", "Decoded", "error"),
    ("watcher.pipeline.stages", "Classification", "label"),
    ("watcher.pipeline.stages", "Classified", "error"),
    ("watcher.pipeline.stages", "Stored", "record"),
    ("watcher.pipeline.decoding", "FileRead", "error"),
    ("watcher.store.records", "ResultRecord", "stored_path"),
]


def test_the_type_checker_refuses_an_assignment_to_any_per_frame_record(tmp_path: Path) -> None:
    lines = ["from typing import Any", ""]
    for module, name, field in _ASSIGNMENTS:
        lines += [f"from {module} import {name}", f"def set_{name}(item: {name}, value: Any) -> None:"]
        lines += [f"    item.{field} = value", ""]
    probe = tmp_path / "probe.py"
    probe.write_text("\n".join(lines))
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=silent", str(probe)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    refused = [line for line in checked.stdout.splitlines() if "is read-only" in line]
    assert len(refused) == len(_ASSIGNMENTS), checked.stdout + checked.stderr


def test_records_compare_and_hash_by_their_fields() -> None:
    now = datetime.now(UTC)

    def record(stored: str) -> ResultRecord:
        return ResultRecord("k", "cam/x.bmp", stored, now, now, "ok")

    assert record("/p/x.bmp") == record("/p/x.bmp") and record("/p/x.bmp") != record("/p/x-1.bmp")
    assert len({record("/p/x.bmp"), record("/p/x.bmp"), record("/p/x-1.bmp")}) == 2
    first = claimed_frame("k", PurePosixPath("cam/x.bmp"), "/a/k=cam%2Fx.bmp", now, "/i/cam")
    assert first == claimed_frame("k", "cam/x.bmp", "/a/k=cam%2Fx.bmp", now, "/i/cam")
    assert hash(first) == hash(claimed_frame("k", "cam/x.bmp", "/a/k=cam%2Fx.bmp", now, "/i/cam"))
