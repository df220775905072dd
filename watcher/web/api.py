"""The JSON API: the command line's results and summaries, frames as pictures, and reviews."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi import Path as FastApiPath
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from watcher.intake.stored_frames import FrameGone, FrameRefused, frame_file
from watcher.store.export import iter_results, json_row
from watcher.store.queries import TimeBasis
from watcher.store.reviews import ReviewLabel
from watcher.store.summary import parse_dimensions, summarize
from watcher.times import parse_zone
from watcher.web.context import WebContext, web_context
from watcher.web.filters import FilterParams
from watcher.web.frames import THUMBNAIL_DEFAULT, THUMBNAIL_MAX, FrameUnreadable, thumbnail_jpeg
from watcher.web.security import CSRF_HEADER

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api")

PAGE_DEFAULT = 100
PAGE_MAX = 1000

Context = Annotated[WebContext, Depends(web_context)]
# Row ids are 32-bit on PostgreSQL; a larger number names no row (and would overflow the driver).
MAX_ID = 2**31 - 1
ResultId = Annotated[int, FastApiPath(ge=1, le=MAX_ID)]
Filters = Annotated[FilterParams, Depends()]


class ReviewBody(BaseModel):
    label: ReviewLabel


@router.get("/results")
def results(
    request: Request,
    context: Context,
    filters: Filters,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = PAGE_DEFAULT,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Response:
    """The objects of `results --format json`, newest first; the `Link` header's `next` pages on."""
    chosen = filters.result_filter(zone=context.zone, default_time=TimeBasis.PROCESSED, before_id=before)
    rows = [json_row(row) for row in iter_results(context.reader, filters=chosen, limit=limit)]
    response = JSONResponse(rows)
    if len(rows) == limit:
        # Relative: behind a reverse proxy the server's own idea of its host and scheme is wrong.
        following = request.url.include_query_params(before=rows[-1]["id"])
        response.headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'
    return response


@router.get("/summary")
def summary(
    context: Context,
    filters: Filters,
    by: str = "camera",
    tz: str | None = None,
) -> list[dict[str, Any]]:
    """The objects of `summary --format json`; hours and days in `tz` (default display.timezone)."""
    try:
        dimensions = parse_dimensions(by)
    except ValueError as error:
        raise HTTPException(422, f"by: {error}") from None
    zone = context.zone
    if tz is not None:
        try:
            zone = parse_zone(tz)
        except ValueError as error:
            raise HTTPException(422, f"tz: {error}") from None
    chosen = filters.result_filter(zone=zone, default_time=TimeBasis.CAPTURED)
    return summarize(context.reader, filters=chosen, by=dimensions, zone=zone)


@router.get("/frames/{result_id}/image")
def frame_image(
    result_id: ResultId,
    context: Context,
    size: Annotated[int, Query(ge=16, le=THUMBNAIL_MAX)] = THUMBNAIL_DEFAULT,
) -> Response:
    """The stored frame scaled to fit size × size, as JPEG."""
    stored_path = context.stored_path(result_id)
    try:
        path = frame_file(stored_path, roots=context.frame_roots)
        picture = thumbnail_jpeg(path, size=size, max_pixels=context.config.inbox.max_pixels)
    except FrameRefused:
        logger.warning(
            "refused frame %d: its stored_path %r is outside processed/ and failed/", result_id, stored_path
        )
        raise HTTPException(403, "the frame's stored path is outside processed/ and failed/") from None
    except FrameGone:
        raise HTTPException(404, "the frame's file is gone") from None
    except FrameUnreadable as error:
        raise HTTPException(422, f"not a picture that can be shown: {error}") from None
    return Response(picture, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.post("/results/{result_id}/review")
def review(result_id: ResultId, body: ReviewBody, request: Request, context: Context) -> dict[str, Any]:
    """Record a review of one frame: female, male or unsure."""
    context.gate.check_csrf(request, request.headers.get(CSRF_HEADER))
    recorded = context.record_review(result_id, body.label, reviewer=request.state.visitor.reviewer)
    return {
        "id": recorded.id,
        "result_id": recorded.result_id,
        "label": str(recorded.label),
        "reviewer": recorded.reviewer,
        "reviewed_at": recorded.reviewed_at.isoformat(timespec="milliseconds"),
    }
