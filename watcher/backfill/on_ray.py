"""The backfill on a Ray cluster (or a local Ray), with Ray Data:

    files (listed here) → read, check, hash, decode: CPU tasks → CLIP + head: an actor pool
    (one GPU per actor on GPU nodes) → rows stored here, batch by batch, through the store.

Ray's known traps, handled: an exception inside `map_batches` fails the whole job (every stage
catches per frame: see watcher.backfill.frames); actors that ask for every CPU starve the read
tasks and the job hangs (each actor and each read task asks for one CPU, explicitly); a driver
that dies loses the run (each row's identity makes a rerun finish it, adding nothing twice).
Frames travel between stages pickled in a binary column: Ray Data needs no schema for them.
"""

from __future__ import annotations

import logging
import os
import pickle
from typing import Any

import numpy as np
from sqlalchemy import Engine

from watcher.backfill.archive import ArchiveFile
from watcher.backfill.frames import archive_records, classify, decode_file, frame_bounds, load_model
from watcher.backfill.report import BackfillReport, store_records
from watcher.config import Config
from watcher.pipeline.stages import FrameBounds
from watcher.store.schema import utc_now

logger = logging.getLogger(__name__)

# Frames per Ray Data batch through the read tasks (the actors take config.batch.size).
READ_BATCH = 16
READ_CPUS = 0.5


def connect(address: str) -> None:
    """`local` starts a Ray on this machine; `auto` or an address joins a running cluster."""
    import ray

    ray.init(
        address=None if address == "local" else address, logging_level=logging.WARNING, log_to_driver=True
    )


def backfill_on_ray(
    config: Config,
    engine: Engine,
    files: list[ArchiveFile],
    *,
    source: str,
    report: BackfillReport,
    actors: int,
) -> None:
    import ray
    import ray.data

    if not files:
        return
    gpus = ray.cluster_resources().get("GPU", 0)  # type: ignore[no-untyped-call]
    received_at = utc_now()
    frames = ray.data.from_items([{"file": pickle.dumps(file)} for file in files])
    decoded = frames.map_batches(
        _read_batch,  # type: ignore[arg-type]  # keyword arguments come from fn_kwargs
        fn_kwargs={"bounds": frame_bounds(config), "received_at": received_at},
        batch_size=READ_BATCH,
        batch_format="numpy",
        # Not the actors' one CPU: different resources keep the reads their own tasks (Ray fuses
        # stages that ask alike), so they spread over the CPU nodes, never starved by actors.
        num_cpus=READ_CPUS,
    )
    classified = decoded.map_batches(
        _ClassifyActor,
        fn_constructor_kwargs={"config": config, "source": source},
        batch_size=config.batch.size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1,
        num_gpus=1 if gpus else 0,
    )
    for batch in classified.iter_batches(batch_size=config.batch.size, batch_format="numpy"):
        store_records(engine, [pickle.loads(record) for record in batch["record"]], report)


def _read_batch(
    batch: dict[str, np.ndarray], *, bounds: FrameBounds, received_at: Any
) -> dict[str, np.ndarray]:
    """A Ray task: each file read and decoded where it lies (a failure is the frame's)."""
    out = []
    for payload in batch["file"]:
        file: ArchiveFile = pickle.loads(payload)
        out.append(pickle.dumps((file, decode_file(file, bounds, received_at=received_at))))
    return {"frame": np.array(out, dtype=object)}


class _ClassifyActor:
    """A Ray actor: CLIP and the head loaded once, then batch after batch."""

    def __init__(self, config: Config, source: str) -> None:
        import torch

        # One CPU is what it asked Ray for (so the read tasks are never starved); its torch
        # threads may still use the node's cores, as the daemon's do.
        torch.set_num_threads(config.model.cpu_threads or os.cpu_count() or 1)
        self._model = load_model(config)
        self._source = source

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pairs = [pickle.loads(payload) for payload in batch["frame"]]
        files = {file.relative.as_posix(): file for file, _ in pairs}
        classified = classify(self._model, [decoded for _, decoded in pairs])
        records = archive_records(classified, files, source=self._source, processed_at=utc_now())
        return {"record": np.array([pickle.dumps(record) for record in records], dtype=object)}
