"""Who may use the web app, and proof that a form or a review came from its own pages.

- No `web.token` (allowed on loopback only): everyone who reaches the port is `local`.
- A token: every request carries `Authorization: Bearer <token>`, or the session cookie the login
  page sets (an HMAC of the token, so changing the token ends every session). Anything else is 401.
- Every POST from a browser (it sends Origin or cookies) must echo the CSRF cookie in the
  `X-CSRF-Token` header or the `csrf_token` form field (double submit), and an Origin, when sent,
  must be this server's own. A bearer token is never sent by a browser on its own, so such calls
  need no CSRF token; neither does a script on loopback without any token (no cookie, no Origin).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

SESSION_COOKIE = "cctv_gender_session"
CSRF_COOKIE = "cctv_gender_csrf"
CSRF_HEADER = "X-CSRF-Token"
LOCAL_REVIEWER = "local"
_SESSION_PURPOSE = b"cctv-gender web session v1"


@dataclass(frozen=True)
class Visitor:
    """Who a request is from: the reviewer name it records, and how it proved itself."""

    reviewer: str
    by_bearer: bool


class Gate:
    """Authentication and CSRF checks for one configured token (or none)."""

    def __init__(self, *, token: str | None, token_name: str) -> None:
        self._token = token
        self._token_name = token_name

    @property
    def needs_login(self) -> bool:
        return self._token is not None

    def session_value(self) -> str:
        if self._token is None:
            raise RuntimeError("no sessions without web.token")
        return hmac.new(self._token.encode(), _SESSION_PURPOSE, hashlib.sha256).hexdigest()

    def token_matches(self, offered: str) -> bool:
        return self._token is not None and hmac.compare_digest(offered.encode(), self._token.encode())

    def visitor(self, request: Request) -> Visitor | None:
        """Who this is; None when a token is needed and none was shown."""
        if self._token is None:
            return Visitor(LOCAL_REVIEWER, by_bearer=False)
        scheme, _, offered = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.token_matches(offered.strip()):
            return Visitor(self._token_name, by_bearer=True)
        session = request.cookies.get(SESSION_COOKIE, "")
        if session and hmac.compare_digest(session.encode(), self.session_value().encode()):
            return Visitor(self._token_name, by_bearer=False)
        return None

    def check_csrf(self, request: Request, submitted: str | None) -> None:
        """403 unless this POST provably comes from one of the app's own pages (or is not from a
        browser at all)."""
        visitor: Visitor | None = getattr(request.state, "visitor", None)
        if visitor is not None and visitor.by_bearer:
            return
        origin = request.headers.get("origin")
        if origin is not None and not _same_origin(origin, request):
            raise HTTPException(status_code=403, detail="cross-site request refused")
        from_browser = origin is not None or "cookie" in request.headers
        if not from_browser and not self.needs_login:
            return
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if not cookie or not submitted or not hmac.compare_digest(cookie.encode(), submitted.encode()):
            raise HTTPException(status_code=403, detail="missing or wrong CSRF token; reload the page")


def csrf_token(request: Request) -> str:
    """The page's CSRF token: the cookie's, or a new one the response will set as the cookie."""
    token = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "new_csrf", None)
    if not token:
        token = secrets.token_urlsafe(32)
        request.state.new_csrf = token
    return token


def _same_origin(origin: str, request: Request) -> bool:
    try:
        parts = urlsplit(origin)
    except ValueError:  # "http://[::1": no browser sends it, and it names no origin of ours
        return False
    return parts.netloc.lower() == request.headers.get("host", "").lower()
