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
import pickle
import socket
from collections.abc import Iterable
from typing import Any

import numpy as np
from sqlalchemy import Engine

from watcher.backfill.archive import ArchiveFile
from watcher.backfill.frames import archive_records, classify, decode_file, frame_bounds, load_model
from watcher.backfill.report import BackfillReport, store_records
from watcher.config import Config
from watcher.errors import StartupError
from watcher.pipeline.stages import FrameBounds
from watcher.store.schema import utc_now

logger = logging.getLogger(__name__)

# Frames per Ray Data batch through the read tasks (the actors take config.batch.size).
READ_BATCH = 16
CONNECT_TIMEOUT_S = 5.0


def check_reachable(address: str) -> None:
    """Something listens at the head's HOST:PORT, or one line at once (Ray itself would retry for
    minutes); `local` and `auto` pass. Its form was checked as the command line was parsed
    (watcher.commands.backfill.ray_address_type: a usage error)."""
    if address in ("local", "auto"):
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise StartupError(f"no Ray cluster at {address}: {error.strerror or error}") from None
    except UnicodeError:  # the IDNA codec's: an empty or over-long label (`a..b`, a 64-letter name)
        raise StartupError(f"no Ray cluster at {address}: {host} is not a host name") from None


def connect(address: str) -> None:
    """`local` starts a Ray on this machine; `auto` or HOST:PORT joins a running cluster (the
    command has checked it with check_reachable before reading anything)."""
    import ray

    try:
        ray.init(address=None if address == "local" else address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError) as error:
        raise StartupError(f"cannot join the Ray cluster at {address}: {error}") from None


def backfill_on_ray(
    config: Config,
    engine: Engine,
    files: Iterable[ArchiveFile],
    *,
    source: str,
    report: BackfillReport,
    actors: int | None,
) -> None:
    import ray
    import ray.data

    # Ray Data takes its items at once: the listing is held, but as pickled bytes only.
    items = [{"file": pickle.dumps(file)} for file in files]
    if not items:
        return
    resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
    gpus = int(resources.get("GPU", 0))
    # By default one actor per GPU; without GPUs one per CPU, each with one torch thread.
    actors = actors or gpus or max(1, int(resources.get("CPU", 1)))
    logger.info("Ray cluster: %s; %d model actor(s)", resources, actors)
    received_at = utc_now()
    frames = ray.data.from_items(items)
    decoded = frames.map_batches(
        _read_batch,  # type: ignore[arg-type]  # keyword arguments come from fn_kwargs
        fn_kwargs={"bounds": frame_bounds(config), "received_at": received_at},
        batch_size=READ_BATCH,
        batch_format="numpy",
        # One CPU each, as the actors ask: on CPU-only nodes Ray then fuses reading into the
        # actors (no copy of the pixels through the object store); with GPU actors the two ask
        # differently, and the reads stay CPU tasks spread over every node, never starved.
        num_cpus=1,
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

        # One CPU is what it asked Ray for: one torch thread (unless model.cpu_threads says
        # otherwise), so actors side by side on a node never oversubscribe its cores.
        torch.set_num_threads(config.model.cpu_threads or 1)
        self._model = load_model(config)
        self._source = source

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pairs = [pickle.loads(payload) for payload in batch["frame"]]
        files = {file.relative.as_posix(): file for file, _ in pairs}
        classified = classify(self._model, [decoded for _, decoded in pairs])
        records = archive_records(classified, files, source=self._source, processed_at=utc_now())
        return {"record": np.array([pickle.dumps(record) for record in records], dtype=object)}
