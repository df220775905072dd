"""The Jinja2 templates of the pages (server-rendered; every asset is served by the app itself)."""

from __future__ import annotations

from pathlib import Path

from fastapi.templating import Jinja2Templates

from watcher.wording import NO_CAMERA

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals["NO_CAMERA"] = NO_CAMERA
