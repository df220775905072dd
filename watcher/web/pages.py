"""The HTML pages: the dashboard, the review grid, one frame, and the login form."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request, Response
from fastapi.responses import RedirectResponse

from model.registry import served_version
from watcher.service.status_report import RECENTLY
from watcher.store.export import iter_results
from watcher.store.queries import ResultFilter, TimeBasis, result_fields
from watcher.store.readers import recent_activity
from watcher.store.reviews import (
    ReviewLabel,
    latest_reviews,
    review_counts,
    review_queue,
    reviews_of,
)
from watcher.store.summary import summarize
from watcher.times import zone_name
from watcher.web.api import ResultId
from watcher.web.charts import Chart, stacked_chart, window
from watcher.web.context import WebContext, web_context
from watcher.web.filters import FilterParams, named_cameras, refuse_nul
from watcher.web.security import SESSION_COOKIE, csrf_token
from watcher.web.templating import templates
from watcher.wording import NO_CAMERA

router = APIRouter()
Context = Annotated[WebContext, Depends(web_context)]

REVIEW_PAGE = 60
RECENT_FAILED = 10


def _page(request: Request, name: str, values: dict[str, Any], *, status_code: int = 200) -> Response:
    context: WebContext = request.app.state.context
    visitor = request.state.visitor
    common = {
        "csrf_token": csrf_token(request),
        "reviewer": visitor.reviewer if visitor is not None else None,
        "zone": zone_name(context.zone),
    }
    return templates.TemplateResponse(request, name, {**common, **values}, status_code=status_code)


@router.get("/")
def dashboard(
    request: Request,
    context: Context,
    days: Annotated[int, Query(ge=1, le=90)] = 7,
    camera: Annotated[list[str] | None, Query()] = None,
) -> Response:
    cameras = named_cameras(camera)
    refuse_nul("camera", *cameras)
    zone = context.zone
    now = datetime.now(UTC)
    start, end, unit = window(now, days=days, zone=zone)
    filters = ResultFilter(
        cameras=cameras, since=start.astimezone(UTC), until=end.astimezone(UTC),
        time_basis=TimeBasis.CAPTURED,
    )  # fmt: skip
    per_camera: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in summarize(context.reader, filters=filters, by=("camera", unit), zone=zone):
        per_camera[row["camera"] or NO_CAMERA].append(row)
    charts: list[Chart] = [
        stacked_chart(name, rows, start=start, end=end, unit=unit, zone=zone)
        for name, rows in sorted(per_camera.items())
    ]
    failed = list(iter_results(context.reader, filters=ResultFilter(status="failed"), limit=RECENT_FAILED))
    activity = recent_activity(
        context.reader, processed_since=now - timedelta(hours=1), seen_since=now - RECENTLY
    )
    serving = sorted({item.model_version for item in activity.instances if item.model_version})
    return _page(
        request,
        "dashboard.html",
        {
            "charts": charts,
            "days": days,
            "unit": unit,
            "start": start,
            "end": end,
            "totals": {
                "female": sum(chart.female for chart in charts),
                "male": sum(chart.male for chart in charts),
                "failed": sum(chart.failed for chart in charts),
            },
            "failed": failed,
            "model": ", ".join(serving) or served_version(context.config.registry_dir),
            "last_processed_at": activity.last_processed_at,
            "processed_last_hour": activity.processed,
            "reviews": review_counts(context.reader),
            "local": lambda moment: moment.astimezone(zone).strftime("%Y-%m-%d %H:%M") if moment else "never",
        },
    )


@router.get("/review")
def review_grid(
    request: Request,
    context: Context,
    filters: Annotated[FilterParams, Depends()],
    everything: Annotated[bool, Query(alias="all")] = False,
) -> Response:
    chosen = filters.result_filter(zone=context.zone, default_time=TimeBasis.CAPTURED)
    frames = review_queue(context.reader, filters=chosen, unreviewed_only=not everything, limit=REVIEW_PAGE)
    reviewed = latest_reviews(context.reader, [frame["id"] for frame in frames])
    for frame in frames:
        latest = reviewed.get(frame["id"])
        frame["review"] = str(latest.label) if latest is not None else None
    return _page(
        request,
        "review.html",
        {
            "frames": frames,
            "filters": filters,
            "everything": everything,
            "labels": [str(x) for x in ReviewLabel],
        },
    )


@router.get("/frames/{result_id}")
def frame_page(request: Request, result_id: ResultId, context: Context) -> Response:
    fields = result_fields(context.reader, result_id)
    if fields is None:
        raise HTTPException(404, f"no result {result_id}")
    zone = context.zone
    return _page(
        request,
        "frame.html",
        {
            "row": fields,
            "reviews": reviews_of(context.reader, result_id),
            "labels": [str(x) for x in ReviewLabel],
            "local": lambda moment: moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S") if moment else "",
        },
    )


@router.post("/frames/{result_id}/review")
def review_form(
    request: Request,
    result_id: ResultId,
    context: Context,
    label: Annotated[ReviewLabel, Form()],
    csrf_token: Annotated[str, Form()] = "",
    next_page: Annotated[str, Form(alias="next")] = "",
) -> Response:
    """The review buttons without JavaScript: record, then back to the page they were on."""
    context.gate.check_csrf(request, csrf_token)
    context.record_review(result_id, label, reviewer=request.state.visitor.reviewer)
    return RedirectResponse(_local_path(next_page) or f"/frames/{result_id}", status_code=303)


@router.get("/login")
def login_page(request: Request, next_page: Annotated[str, Query(alias="next")] = "/") -> Response:
    return _page(request, "login.html", {"next": _local_path(next_page) or "/", "error": None})


@router.post("/login")
def login(
    request: Request,
    context: Context,
    token: Annotated[str, Form()],
    csrf_token: Annotated[str, Form()] = "",
    next_page: Annotated[str, Form(alias="next")] = "/",
) -> Response:
    context.gate.check_csrf(request, csrf_token)
    if not context.gate.needs_login:
        return RedirectResponse(_local_path(next_page) or "/", status_code=303)
    if not context.gate.token_matches(token):
        values = {"next": _local_path(next_page) or "/", "error": "That is not the token."}
        return _page(request, "login.html", values, status_code=401)
    response = RedirectResponse(_local_path(next_page) or "/", status_code=303)
    response.set_cookie(SESSION_COOKIE, context.gate.session_value(), httponly=True, samesite="strict")
    return response


def _local_path(target: str) -> str | None:
    """A path on this server to go back to, never another site (`//evil.example`, `https://...`)."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target[1:2] in ("/", "\\"):
        return None
    return target
