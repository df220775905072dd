"""The web API's query parameters as the same `ResultFilter` the command line builds."""

from __future__ import annotations

from datetime import tzinfo
from typing import Annotated, Literal

from fastapi import HTTPException, Query

from watcher.store.queries import ResultFilter, TimeBasis
from watcher.times import time_window


class FilterParams:
    """camera (repeatable), since, until, label, status, min_probability, model, time."""

    def __init__(
        self,
        camera: Annotated[list[str] | None, Query()] = None,
        since: str | None = None,
        until: str | None = None,
        # "": the review page's "either" (a form sends every field, the empty ones as "").
        label: Literal["female", "male", ""] | None = None,
        status: Literal["ok", "failed"] | None = None,
        min_probability: Annotated[float | None, Query(ge=0.0, le=1.0)] = None,
        model: str | None = None,
        time: TimeBasis | None = None,
    ) -> None:
        self.cameras = named_cameras(camera)
        self.since = since
        self.until = until
        self.label = label or None
        self.status = status
        self.min_probability = min_probability
        self.model = model
        self.time = time

    def result_filter(
        self, *, zone: tzinfo, default_time: TimeBasis, before_id: int | None = None
    ) -> ResultFilter:
        refuse_nul("camera", *self.cameras)
        refuse_nul("model", *([self.model] if self.model is not None else []))
        try:
            since, until = time_window(self.since, self.until, zone=zone)
        except ValueError as error:
            raise HTTPException(status_code=422, detail=str(error)) from None
        return ResultFilter(
            cameras=self.cameras,
            since=since,
            until=until,
            label=self.label,
            min_probability=self.min_probability,
            status=self.status,
            model_version=self.model,
            time_basis=self.time or default_time,
            before_id=before_id,
        )


def named_cameras(camera: list[str] | None) -> tuple[str, ...]:
    """The cameras a page's query names. A camera box left empty sends camera=: no camera is named
    "" (a frame at the inbox's top has none), so it means any camera, as empty since/until do."""
    return tuple(name for name in camera or () if name)


def refuse_nul(name: str, *values: str) -> None:
    """422 for a NUL byte: no camera folder or model version holds one, and PostgreSQL's text
    cannot, so it would come back as the database's error (503) instead of the request's."""
    if any("\0" in value for value in values):
        raise HTTPException(status_code=422, detail=f"{name}: a NUL byte names nothing")
