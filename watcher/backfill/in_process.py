"""The backfill without Ray: the daemon's decode threads and model in this process, the next
batch read while the model works on this one, batch after batch as the archive is listed."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor

from sqlalchemy import Engine
from tqdm import tqdm

from watcher.backfill.archive import ArchiveFile, batches
from watcher.backfill.frames import archive_records, classify, decode_file, frame_bounds, load_model
from watcher.backfill.report import BackfillReport, store_records
from watcher.config import Config
from watcher.pipeline.stages import Decoded
from watcher.store.schema import utc_now


def backfill_in_process(
    config: Config, engine: Engine, files: Iterable[ArchiveFile], *, source: str, report: BackfillReport
) -> None:
    model = load_model(config)
    bounds = frame_bounds(config)
    received_at = utc_now()
    chunks = batches(files, size=config.batch.size)
    with ThreadPoolExecutor(config.batch.decode_threads, thread_name_prefix="backfill-read") as pool:

        def start(chunk: list[ArchiveFile] | None) -> list[Future[Decoded]]:
            return [pool.submit(decode_file, file, bounds, received_at=received_at) for file in chunk or ()]

        chunk = next(chunks, None)
        reading = start(chunk)
        # No total: the archive is still being listed (a count first would walk it twice).
        with tqdm(unit="frame", desc="backfill", disable=None) as progress:
            while chunk is not None:
                decoded = [future.result() for future in reading]
                following = next(chunks, None)  # lists on while this batch is classified
                reading = start(following)
                classified = classify(model, decoded)
                by_key = {file.relative.as_posix(): file for file in chunk}
                records = archive_records(classified, by_key, source=source, processed_at=utc_now())
                store_records(engine, records, report)
                progress.update(len(chunk))
                chunk = following
