"""The web API's query parameters as the same `ResultFilter` the command line builds."""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Annotated, Literal

from fastapi import HTTPException, Query

from watcher.store.queries import ResultFilter, TimeBasis
from watcher.times import parse_time


class FilterParams:
    """camera (repeatable), since, until, label, status, min_probability, model, time."""

    def __init__(
        self,
        camera: Annotated[list[str] | None, Query()] = None,
        since: str | None = None,
        until: str | None = None,
        label: Literal["female", "male"] | None = None,
        status: Literal["ok", "failed"] | None = None,
        min_probability: Annotated[float | None, Query(ge=0.0, le=1.0)] = None,
        model: str | None = None,
        time: TimeBasis | None = None,
    ) -> None:
        self.cameras = tuple(camera or ())
        self.since = since
        self.until = until
        self.label = label
        self.status = status
        self.min_probability = min_probability
        self.model = model
        self.time = time

    def result_filter(
        self, *, zone: tzinfo, default_time: TimeBasis, before_id: int | None = None
    ) -> ResultFilter:
        since = _time("since", self.since, zone)
        until = _time("until", self.until, zone)
        if since is not None and until is not None and since >= until:
            raise HTTPException(status_code=422, detail="since must be before until")
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


def _time(name: str, text: str | None, zone: tzinfo) -> datetime | None:
    if text is None or not text.strip():
        return None
    try:
        return parse_time(text, zone=zone)
    except ValueError as error:
        raise HTTPException(status_code=422, detail=f"{name}: {error}") from None
