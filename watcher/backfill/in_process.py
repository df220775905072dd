"""The backfill without Ray: the daemon's decode threads and model in this process, the next
batch read while the model works on this one."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from sqlalchemy import Engine
from tqdm import tqdm

from watcher.backfill.archive import ArchiveFile
from watcher.backfill.frames import archive_records, classify, decode_file, frame_bounds, load_model
from watcher.backfill.report import BackfillReport, store_records
from watcher.config import Config
from watcher.pipeline.stages import Decoded
from watcher.store.schema import utc_now


def backfill_in_process(
    config: Config, engine: Engine, files: list[ArchiveFile], *, source: str, report: BackfillReport
) -> None:
    model = load_model(config)
    bounds = frame_bounds(config)
    received_at = utc_now()
    size = config.batch.size
    chunks = [files[start : start + size] for start in range(0, len(files), size)]
    with ThreadPoolExecutor(config.batch.decode_threads, thread_name_prefix="backfill-read") as pool:

        def start(chunk: list[ArchiveFile]) -> list[Future[Decoded]]:
            return [pool.submit(decode_file, file, bounds, received_at=received_at) for file in chunk]

        reading = start(chunks[0]) if chunks else []
        with tqdm(total=len(files), unit="frame", desc="backfill", disable=None) as progress:
            for index, chunk in enumerate(chunks):
                decoded = [future.result() for future in reading]
                if index + 1 < len(chunks):
                    reading = start(chunks[index + 1])
                classified = classify(model, decoded)
                by_key = {file.relative.as_posix(): file for file in chunk}
                records = archive_records(classified, by_key, source=source, processed_at=utc_now())
                store_records(engine, records, report)
                progress.update(len(chunk))
