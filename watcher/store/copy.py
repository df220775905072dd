"""`cctv-gender db copy --to URL`: move results from this config's database to another one.

Used once when a site outgrows SQLite: the target is migrated to the current schema, then rows
are copied in chunks, each chunk one transaction. The frame key is the identity, so a copy that
was interrupted (or repeated) can simply be run again: rows already in the target are skipped.
Row ids are the target's own; the frame key, paths and times are kept as they are.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy import Engine, select

from watcher.store.migrate import upgrade_to_head
from watcher.store.records import result_record
from watcher.store.schema import Result
from watcher.store.session import orm_session, transaction
from watcher.store.writes import insert_new_rows

logger = logging.getLogger(__name__)

CHUNK_ROWS = 1000


@dataclass
class CopyReport:
    read: int = 0
    copied: int = 0
    seconds: float = 0.0

    @property
    def already_there(self) -> int:
        return self.read - self.copied


def copy_results(source: Engine, target: Engine, *, chunk_rows: int = CHUNK_ROWS) -> CopyReport:
    upgrade_to_head(target)
    report = CopyReport()
    started = time.perf_counter()
    with orm_session(source) as session:
        rows = session.scalars(select(Result).order_by(Result.id).execution_options(yield_per=chunk_rows))
        for chunk in rows.partitions():
            with transaction(target) as connection:
                report.copied += len(insert_new_rows(connection, map(result_record, chunk)))
            report.read += len(chunk)
            logger.info("copied %d of %d rows read so far", report.copied, report.read)
    report.seconds = time.perf_counter() - started
    return report
