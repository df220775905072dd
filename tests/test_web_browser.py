"""The web pages in a real browser: `cctv-gender serve` as a process, Debian's Chromium driven by
Playwright (no browser download: `make test` installs the `chromium` package). Screenshots are
kept in .artefacts/web/ for a person to look at."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from model.synthetic import bmp_bytes
from tests.helpers import REPO, query, seed_results, wait_for

CHROMIUM = Path("/usr/bin/chromium")
ARTEFACTS = Path(os.environ.get("CCTV_GENDER_ARTEFACTS", REPO / ".artefacts")) / "web"
# The flags this machine needs: no sandbox as root, and none of Chromium's own network calls.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture
def served(make_config: Callable[..., Path], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`serve` on a free loopback port, over a database of 24 frames from two cameras over the
    last day (real BMPs in processed/)."""
    database = tmp_path / "data" / "results.sqlite3"
    database.parent.mkdir()
    now = datetime.now(UTC).replace(microsecond=0)
    rows: list[dict[str, Any]] = []
    for index in range(24):
        camera = f"cam-0{1 + index % 2}"
        frame = tmp_path / "processed" / camera / f"{index:03d}.bmp"
        frame.parent.mkdir(parents=True, exist_ok=True)
        frame.write_bytes(bmp_bytes(width=160, height=120, seed=index))
        at = now - timedelta(hours=index)
        label = "male" if index % 3 == 0 else "female"
        rows.append({"at": at, "file_mtime": at, "camera": camera, "label": label,
                     "probability": 0.5 + index / 50, "stored_path": str(frame)})  # fmt: skip
    rows.append(
        {"at": now, "camera": "cam-01", "status": "failed", "stored_path": str(tmp_path / "failed" / "x")}
    )
    seed_results(f"sqlite:///{database}", rows)
    config = make_config()
    port = _free_port()
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "watcher", "serve", "--config", str(config), "--listen", f"127.0.0.1:{port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{base}/static/app.css") or server.poll() is not None, timeout=30)
        assert server.poll() is None, (tmp_path / "serve.log").read_text()
        yield base, database
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def test_the_dashboard_and_a_review_by_click_and_by_key(served: tuple[str, Path], browser: Any) -> None:
    from playwright.sync_api import expect

    base, database = served
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{base}/?days=1")
    charts = page.locator("figure.chart")
    assert charts.count() == 2  # one per camera
    assert page.locator("figure.chart rect.female").count() > 0
    assert "failed" in page.locator(".facts").inner_text()
    page.screenshot(path=str(ARTEFACTS / "dashboard.png"), full_page=True)

    page.goto(f"{base}/review")
    first = page.locator("li.tile").first
    first_id = int(first.get_attribute("data-id"))
    first.locator("button.female").click()
    wait_for(lambda: query(database, "SELECT result_id, label FROM reviews") == [(first_id, "female")])
    # The row is committed before the browser has the answer: poll the page, don't read it once.
    expect(first).to_have_class(re.compile(r"\breviewed\b"))
    # The answer moved the focus to the next frame: a key press reviews that one.
    second = page.locator("li.tile").nth(1)
    second_id = int(second.get_attribute("data-id"))
    expect(second).to_be_focused()
    page.keyboard.press("m")
    wait_for(lambda: len(query(database, "SELECT id FROM reviews")) == 2)
    assert query(database, "SELECT result_id, label, reviewer FROM reviews ORDER BY id")[1] == (
        second_id, "male", "local",
    )  # fmt: skip
    page.screenshot(path=str(ARTEFACTS / "review.png"), full_page=False)

    page.goto(f"{base}/frames/{first_id}")
    assert "female by local" in page.locator("#reviews").inner_text()
    # Every picture on the page loaded (served by the app itself: no CDN).
    assert page.evaluate("[...document.images].every(image => image.complete && image.naturalWidth > 0)")
    page.close()
