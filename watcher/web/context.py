"""What every request of the web app shares: the config, the two engines, the gate, the counters."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import tzinfo
from functools import cached_property
from pathlib import Path

from fastapi import HTTPException, Request
from prometheus_client import CollectorRegistry, Counter, GCCollector, PlatformCollector, ProcessCollector
from sqlalchemy import Engine

from watcher.config import Config
from watcher.intake.stored_frames import frame_roots
from watcher.store.queries import stored_path_of
from watcher.store.reviews import NotReviewable, ReviewLabel, ReviewRecord, UnknownResult, record_review
from watcher.web.security import Gate


class WebMetrics:
    """The web server's own metrics (its process and the reviews it recorded)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.reviews = Counter(
            "cctv_gender_reviews", "Reviews recorded through the web app", ["label"], registry=self.registry
        )


@dataclass
class WebContext:
    config: Config
    reader: Engine  # never takes the write lock
    writer: Engine  # one short transaction per review
    gate: Gate
    metrics: WebMetrics = field(default_factory=WebMetrics)

    @property
    def zone(self) -> tzinfo:
        return self.config.display.zone

    @cached_property
    def frame_roots(self) -> tuple[Path, ...]:
        # Resolved once: every picture request checks against them.
        return frame_roots(self.config.paths.processed, self.config.paths.failed)

    def stored_path(self, result_id: int) -> str:
        stored = stored_path_of(self.reader, result_id)
        if stored is None:
            raise HTTPException(404, f"no result {result_id}")
        return stored

    def record_review(self, result_id: int, label: ReviewLabel, *, reviewer: str) -> ReviewRecord:
        """One review through the writer; 404 for an unknown frame, 409 for one that failed."""
        try:
            recorded = record_review(self.writer, result_id=result_id, label=label, reviewer=reviewer)
        except UnknownResult:
            raise HTTPException(404, f"no result {result_id}") from None
        except NotReviewable as error:
            raise HTTPException(409, str(error)) from None
        self.metrics.reviews.labels(label=str(label)).inc()
        return recorded


def web_context(request: Request) -> WebContext:
    context: WebContext = request.app.state.context
    return context
