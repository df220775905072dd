"""Assembling the daemon from a config: folders, database, CLIP, head, processor, loop."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

import torch
from sqlalchemy import Engine

from model.clip_features import ClipFeatureExtractor
from model.engine_choice import Engines, load_clip, load_engines
from model.heads import Head
from model.keras_head import KerasBackendError
from model.registry import RegistryError
from model.runtime import ModelLoadError
from model.serving import load_serving_head
from watcher.config import Config
from watcher.errors import StartupError, raise_if_stopped
from watcher.intake.folders import SiteFolderAway, prepare_folders
from watcher.intake.site_mounts import SiteMounts
from watcher.pipeline.daemon import Daemon
from watcher.pipeline.file_workers import FileWorkersFailed
from watcher.pipeline.head_reload import HeadReloader
from watcher.pipeline.lanes import lanes_for
from watcher.pipeline.processing import BatchProcessor
from watcher.pipeline.stages import FrameBounds, OutputFolders
from watcher.service.instance import InstanceLock, acquire_instance, default_prefix
from watcher.service.metrics import Metrics
from watcher.service.notify import SystemdNotifier
from watcher.service.telemetry import Telemetry
from watcher.store.file_guard import DatabaseFileGuard
from watcher.store.opening import open_database
from watcher.wording import plural

logger = logging.getLogger(__name__)

T = TypeVar("T")


def load_extractor(config: Config) -> ClipFeatureExtractor:
    """The configured CLIP model on the engine model.engine_choice picks (the daemon, `train`,
    `evaluate`, `rescore` and `backfill` all load it here), or StartupError with a one-line reason.
    Only that engine is loaded."""
    return _loaded(config, load_clip)


def load_engine_set(config: Config) -> Engines:
    """As load_extractor, with every engine the config allows that passed the gate on this
    machine loaded too (`evaluate` and `train` report the head on each)."""
    return _loaded(config, load_engines)


def _loaded(config: Config, load: Callable[..., T]) -> T:
    if config.model.cpu_threads:
        torch.set_num_threads(config.model.cpu_threads)
    model = config.model
    try:
        return load(
            model.clip,
            device=model.device,
            engine=model.runtime,
            precision=model.precision,
            cache_root=config.registry_dir,
        )
    except ModelLoadError as error:
        raise StartupError(str(error)) from None


def build_daemon(config: Config, *, stop: threading.Event, instance_name: str | None = None) -> Daemon:
    """Everything `watch` needs, in startup order; raises StartupError with a one-line reason, or
    StartupStopped once `stop` is set: it is looked at after each step (the step in hand, a model
    load say, is finished first), and what was started is ended, as a failed start's.
    Sets the process's switch interval (batch.gil_switch_interval_ms): the daemon's process."""
    # Each torch operation and system call gives the GIL up and must take it back; beside a thread
    # running Python that can take a whole switch interval (bench/gil_convoy.py measures it).
    sys.setswitchinterval(config.batch.gil_switch_interval_ms / 1000)
    # The database first: a config that cannot reach it leaves no folder behind.
    engine = open_database(config, migrate=True)
    try:
        raise_if_stopped(stop, "after the database migration")
        mounts = _make_folders(config)
        instance = acquire_instance(
            config.in_progress, name=instance_name, prefix=default_prefix(config.source)
        )
        try:
            return _assemble(config, engine, stop=stop, instance=instance, mounts=mounts)
        except BaseException:
            instance.release()
            raise
    except BaseException:
        # A start that fails closes the database as a run's end does (Daemon.run): SQLite removes
        # its -wal and -shm at the last close, instead of leaving them owned by whoever ran this.
        engine.dispose()
        raise


def _assemble(
    config: Config, engine: Engine, *, stop: threading.Event, instance: InstanceLock, mounts: SiteMounts
) -> Daemon:
    extractor = load_extractor(config)
    raise_if_stopped(stop, "after the model load")
    lanes = lanes_for(extractor, gpu_lanes=config.batch.gpu_lanes)
    extractor.warm_up(
        config.batch.size, thread_counts=(lanes.threads_each, lanes.all_threads), traced=config.model.traced
    )
    raise_if_stopped(stop, "after the model's warm-up")
    prompts = config.model.zero_shot.by_label()

    def load_head() -> Head:
        return load_serving_head(config.registry_dir, clip=extractor, prompts=prompts)

    try:
        head = load_head()
    except (RegistryError, KerasBackendError) as error:
        raise StartupError(str(error)) from None
    raise_if_stopped(stop, "after the head load")
    processor = _processor(config, engine, extractor=extractor, head=head, instance=instance, mounts=mounts)
    try:
        raise_if_stopped(
            stop, "after the file workers' start" if processor.file_workers else "after the head load"
        )
        _log_plan(config, processor, instance, extractor)
        telemetry = Telemetry(
            instance=instance.name,
            data=config.paths.data,
            model_version=head.version,
            notifier=SystemdNotifier(),
            metrics=_serve_metrics(config),
        )
    except BaseException:
        processor.close()  # its file workers ended and joined, its shared memory removed
        raise
    reloader = HeadReloader(config.registry_dir, load=load_head)
    return Daemon(
        config,
        engine=engine,
        processor=processor,
        stop=stop,
        instance=instance,
        reloader=reloader,
        telemetry=telemetry,
        mounts=mounts,
    )


def _processor(
    config: Config,
    engine: Engine,
    *,
    extractor: ClipFeatureExtractor,
    head: Head,
    instance: InstanceLock,
    mounts: SiteMounts,
) -> BatchProcessor:
    """The batch processor, its file worker processes started; StartupError if one dies as they
    start (it closes what it had made: their shared memory, the other workers)."""
    try:
        return BatchProcessor(
            engine=engine,
            extractor=extractor,
            head=head,
            folders=OutputFolders(
                processed=config.paths.processed, failed=config.paths.failed, mounts=mounts
            ),
            bounds=FrameBounds(
                max_pixels=config.inbox.max_pixels, max_file_bytes=config.inbox.max_file_bytes
            ),
            store_embeddings=config.database.store_embeddings,
            decode_workers=config.batch.decode_threads,
            file_processes=config.batch.file_process_count(
                on_accelerator=extractor.runtime.device.type != "cpu"
            ),
            batch_size=config.batch.size,
            gpu_lanes=config.batch.gpu_lanes,
            database_guard=DatabaseFileGuard(engine),
            claims_in_place=instance.in_place,
        )
    except FileWorkersFailed:  # its own words are about a running daemon's frames: none yet
        raise StartupError(
            "a file worker process died as it started (batch.file_processes = 0 keeps file work on threads)"
        ) from None


def _make_folders(config: Config) -> SiteMounts:
    """The site folders made, or found where they were; the mount points they are under now, that
    the daemon holds them to while it runs."""
    paths = config.paths
    try:
        return SiteMounts.at_start(
            prepare_folders(paths.site_folders(), inside=[config.in_progress], data=paths.data)
        )
    except SiteFolderAway as error:
        raise StartupError(str(error)) from None
    except OSError as error:
        raise StartupError(f"cannot create {error.filename}: {error.strerror}") from None


def _log_plan(
    config: Config, processor: BatchProcessor, instance: InstanceLock, extractor: ClipFeatureExtractor
) -> None:
    logger.info(
        "watching %s (batch %d, max wait %d ms), model %s",
        config.paths.inbox,
        config.batch.size,
        config.batch.max_wait_ms,
        processor.head.version,
    )
    logger.info("instance %s, in-progress area %s", instance.name, instance.area)
    lanes, workers = processor.lanes, processor.file_workers
    logger.info(
        "model on %s (%s): up to %s at once, %s each; file work on %s",
        extractor.runtime.device,
        extractor.runtime.tag,
        plural(lanes.count, "batch"),
        plural(lanes.threads_each, "CPU thread"),
        plural(workers.count, "process", "processes") if workers else "threads",
    )


def _serve_metrics(config: Config) -> Metrics | None:
    if not config.metrics.listen:
        return None
    metrics = Metrics()
    try:
        metrics.serve(config.metrics.listen)
    except OSError as error:
        raise StartupError(f"metrics.listen {config.metrics.listen}: {error.strerror or error}") from None
    return metrics
