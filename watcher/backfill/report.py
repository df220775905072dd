"""What a backfill did, and its rows stored batch by batch (ON CONFLICT DO NOTHING)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine

from watcher.store.records import ResultRecord, Status
from watcher.store.writes import insert_new

logger = logging.getLogger(__name__)


@dataclass
class BackfillReport:
    files: int = 0  # in the archive (within --since/--until)
    ok: int = 0
    failed: int = 0
    skipped: int = 0  # already done: by an earlier run, or by another run at the same time
    seconds: float = 0.0

    @property
    def frames_per_s(self) -> float:
        return (self.ok + self.failed) / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"backfill: {self.files} files, {self.ok} ok, {self.failed} failed, "
            f"{self.skipped} skipped as already done, {self.frames_per_s:.1f} frames/s"
        )


def store_records(engine: Engine, records: list[ResultRecord], report: BackfillReport) -> None:
    """One transaction for the batch, which also deletes the failed rows its `ok` rows replace; a
    row already there (same archive, path and content) is skipped, and a row the database cannot
    hold is logged and counted failed (the failed row it would have replaced stays)."""
    outcome = insert_new(engine, records, supersede_failed=True)
    for record in records:
        if record.frame_key in outcome.rejected:
            logger.warning("%s: %s", record.stored_path, outcome.rejected[record.frame_key])
            report.failed += 1
        elif record.frame_key not in outcome.inserted:
            report.skipped += 1
        elif record.status == Status.OK:
            report.ok += 1
        else:
            report.failed += 1
