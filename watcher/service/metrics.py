"""Prometheus metrics (off unless `metrics.listen` is set), on a registry of our own."""

from __future__ import annotations

import logging
import re

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from watcher.config.listen import METRICS_EXAMPLE, split_listen
from watcher.reports import BatchReport

logger = logging.getLogger(__name__)

# Failure reasons become a small, fixed set of label values (the full text is in the database).
_REASON_KINDS = (
    ("truncated", re.compile(r"^(truncated|still being written)")),
    ("not_an_image", re.compile(r"^not a recognised image format")),
    ("too_large", re.compile(r"^too large")),
    ("not_regular_file", re.compile(r"^not a regular file")),
    ("model_error", re.compile(r"^model error")),
    ("cannot_read", re.compile(r"^cannot read")),
    ("cannot_decode", re.compile(r"^(cannot decode|invalid (dimensions|pixel data offset)|empty file)")),
)


def reason_kind(reason: str) -> str:
    return next((kind for kind, pattern in _REASON_KINDS if pattern.match(reason)), "other")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # The default registry's process_*, python_* and gc collectors, on ours.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.frames = Counter(
            "cctv_gender_frames",
            "Frames committed, per camera ('' for frames without one) and label (female, male, failed)",
            ["camera", "label"],
            registry=self.registry,
        )
        self.last_batch = Gauge(
            "cctv_gender_last_batch_timestamp_seconds",
            "When the last batch was committed (Unix time)",
            registry=self.registry,
        )
        self.processed = Counter(
            "cctv_gender_frames_processed", "Frames classified and committed", registry=self.registry
        )
        self.failed = Counter(
            "cctv_gender_frames_failed",
            "Frames moved to failed/, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "cctv_gender_batch_frames",
            "Frames per committed batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "cctv_gender_batch_seconds",
            "Time to process one batch (decode, CLIP, head, commit, moves)",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.arrival_to_row = Histogram(
            "cctv_gender_arrival_to_row_seconds",
            "From the frame file's last write to its committed row",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "cctv_gender_queue_depth", "Frames waiting in the inbox", registry=self.registry
        )
        self.model = Info("cctv_gender_model", "The head being served", registry=self.registry)

    def record_batch(self, report: BatchReport) -> None:
        self.processed.inc(report.ok)
        for reason in report.failures.values():
            self.failed.labels(reason=reason_kind(reason)).inc()
        for (camera, label), count in report.per_camera.items():
            self.frames.labels(camera=camera, label=label).inc(count)
        self.last_batch.set_to_current_time()
        self.batch_size.observe(report.frames)
        self.batch_seconds.observe(report.seconds)
        for delay in report.arrival_delays:
            self.arrival_to_row.observe(max(delay, 0.0))

    def serve(self, listen: str) -> None:
        host, port = split_listen(listen, example=METRICS_EXAMPLE)  # metrics.listen, checked already
        start_http_server(port, addr=host or "127.0.0.1", registry=self.registry)
        logger.info("metrics on http://%s/metrics", listen)
