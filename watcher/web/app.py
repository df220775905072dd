"""The web app: `create_app(context)` gives the ASGI app `cctv-gender serve` runs under uvicorn
(and the tests drive with FastAPI's test client)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from watcher.service.status import collect_status, render_status
from watcher.store.errors import StorageError
from watcher.web import api, pages
from watcher.web.context import WebContext
from watcher.web.security import CSRF_COOKIE, csrf_token
from watcher.web.templating import templates

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
# Reachable without logging in: the login page itself and what it needs to look right.
OPEN_PATHS = ("/login", "/static/")


def create_app(context: WebContext) -> FastAPI:
    app = FastAPI(title="cctv-gender", docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json")
    app.state.context = context
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        visitor = context.gate.visitor(request)
        request.state.visitor = visitor
        path = request.url.path
        if visitor is None and not path.startswith(OPEN_PATHS):
            return _login_needed(request)
        response = await call_next(request)
        new_csrf = getattr(request.state, "new_csrf", None)
        if new_csrf:
            response.set_cookie(CSRF_COOKIE, new_csrf, httponly=True, samesite="strict")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    @app.exception_handler(StorageError)
    async def storage_unavailable(request: Request, error: StorageError) -> Response:
        logger.warning("database: %s", error)
        return JSONResponse({"detail": f"the database cannot be read: {error}"}, status_code=503)

    @app.get("/healthz")
    def healthz() -> Response:
        """`cctv-gender status --format json`; 200 when healthy, 503 when not."""
        report = collect_status(context.config)
        body = render_status(report, output_format="json")
        return Response(body, media_type="application/json", status_code=200 if report.healthy else 503)

    if context.config.metrics.listen is not None:

        @app.get("/metrics")
        def metrics() -> Response:
            return Response(generate_latest(context.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _login_needed(request: Request) -> Response:
    if request.url.path.startswith("/api/") or request.url.path in ("/healthz", "/metrics"):
        return JSONResponse(
            {"detail": "log in: send Authorization: Bearer <web.token>"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    page = templates.TemplateResponse(
        request,
        "login.html",
        {"csrf_token": csrf_token(request), "next": request.url.path, "error": None},
        status_code=401,
    )
    new_csrf = getattr(request.state, "new_csrf", None)
    if new_csrf:
        page.set_cookie(CSRF_COOKIE, new_csrf, httponly=True, samesite="strict")
    return page
