"""The web app: `create_app(context)` gives the ASGI app `cctv-gender serve` runs under uvicorn
(and the tests drive with FastAPI's test client)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
# Without a token only loopback is allowed, and only under loopback names: a page on another site
# that rebinds its own name to 127.0.0.1 (DNS rebinding) would otherwise be "same origin".
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY"}
# Every body the app takes is a short form (login, a review button) or a one-line JSON review.
# Without a cap, anyone who reaches the port could post gigabytes to the open login form, which
# the form parser spools to the temporary folder's disk before any check is made.
MAX_BODY_BYTES = 64 * 1024


def create_app(context: WebContext, *, listen_host: str = "127.0.0.1") -> FastAPI:
    """The app; `listen_host` is the address it is served on (also a name the browser may use)."""
    # No interactive docs: FastAPI's load their script from a CDN (the sites are often offline);
    # the OpenAPI description is served as JSON.
    app = FastAPI(title="cctv-gender", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.context = context
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit)  # inside the guard: a refused visitor's body is never read

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        visitor = context.gate.visitor(request)
        request.state.visitor = visitor
        path = request.url.path
        if visitor is None and not path.startswith(OPEN_PATHS):
            response = _login_needed(request)
        else:
            response = await call_next(request)
        new_csrf = getattr(request.state, "new_csrf", None)
        if new_csrf:
            response.set_cookie(CSRF_COOKIE, new_csrf, httponly=True, samesite="strict")
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    if not context.gate.needs_login:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=[*LOOPBACK_NAMES, listen_host])

    @app.exception_handler(StorageError)
    async def storage_unavailable(request: Request, error: StorageError) -> Response:
        logger.warning("database: %s", error)
        return JSONResponse({"detail": f"the database cannot be read: {error}"}, status_code=503)

    @app.get("/healthz")
    def healthz() -> Response:
        """`cctv-gender status --format json`; 200 when healthy, 503 when not."""
        report = collect_status(context.config, engine=context.reader)
        body = render_status(report, output_format="json")
        return Response(body, media_type="application/json", status_code=200 if report.healthy else 503)

    if context.config.metrics.listen is not None:

        @app.get("/metrics")
        def metrics() -> Response:
            return Response(generate_latest(context.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


_TOO_LARGE = f"the request body is over {MAX_BODY_BYTES // 1024} KiB"


class BodyLimit:
    """413 for a request body over MAX_BODY_BYTES: at once when Content-Length says so, else as
    soon as the chunks read add up to more."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = Headers(scope=scope).get("content-length", "") if scope["type"] == "http" else ""
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            await JSONResponse({"detail": _TOO_LARGE}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES:
                raise HTTPException(413, _TOO_LARGE)  # the route's body parsing passes it on
            return message

        await self.app(scope, counted if scope["type"] == "http" else receive, send)


def _login_needed(request: Request) -> Response:
    if request.url.path.startswith("/api/") or request.url.path in ("/healthz", "/metrics"):
        return JSONResponse(
            {"detail": "log in: send Authorization: Bearer <web.token>"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return templates.TemplateResponse(
        request,
        "login.html",
        {"csrf_token": csrf_token(request), "next": target, "error": None},
        status_code=401,
    )
