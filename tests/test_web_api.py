"""`cctv-gender serve`'s JSON API and pages through FastAPI's test client, on SQLite and PostgreSQL:
the same answers as the command line, frames as pictures (and never a file outside processed/ or
failed/), reviews in their own table, the token and CSRF refusals."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import Engine, insert

from model.synthetic import bmp_bytes
from tests.helpers import query_url, seed_results
from watcher.commands.main import main
from watcher.config import load_config
from watcher.store.engine import make_engine
from watcher.store.opening import open_database
from watcher.store.schema import Result
from watcher.web.app import MAX_BODY_BYTES, create_app
from watcher.web.context import WebContext
from watcher.web.security import CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE, Gate
from watcher.wording import NO_CAMERA

BASE = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def site(make_config: Callable[..., Path], tmp_path: Path, database_url: str) -> Iterator[Callable[..., Any]]:
    """A config, a database with rows whose frames are real files in processed/, and a way to get
    a test client on it (with or without a token)."""
    processed = tmp_path / "processed"
    (processed / "cam-07").mkdir(parents=True)
    (tmp_path / "failed").mkdir()
    (tmp_path / "data").mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the browser")
    rows: list[dict[str, Any]] = []
    for index in range(4):
        frame = processed / "cam-07" / f"{index}.bmp"
        frame.write_bytes(bmp_bytes(width=64, height=48, seed=index))
        rows.append(
            {
                "at": BASE + timedelta(minutes=20 * index),
                "camera": "cam-07",
                "label": "female" if index % 2 else "male",
                "probability": 0.55 + 0.1 * index,
                "stored_path": str(frame),
            }
        )
    rows.append({"at": BASE, "camera": "cam-01", "label": "male", "probability": 0.9,
                 "stored_path": str(processed / "gone.bmp")})  # fmt: skip
    # A forged row: its stored_path walks out of processed/ to a file that exists.
    rows.append({"at": BASE, "camera": "cam-01", "label": "male", "probability": 0.9,
                 "stored_path": str(processed / ".." / "secret.txt")})  # fmt: skip
    seed_results(database_url, rows)

    engines: list[Engine] = []

    def client(**web: Any) -> TestClient:
        config = load_config(make_config(database={"url": database_url}, web=web))
        reader = open_database(config, migrate=False, read_only=True)
        writer = open_database(config, migrate=False)
        engines.extend((reader, writer))
        gate = Gate(token=config.web.token, token_name=config.web.token_name)
        app = create_app(WebContext(config=config, reader=reader, writer=writer, gate=gate))
        made = TestClient(app, base_url="http://127.0.0.1")
        made.config_path = config.source  # type: ignore[attr-defined]
        return made

    yield client
    for engine in engines:
        engine.dispose()


@pytest.fixture
def client(site: Callable[..., TestClient]) -> Iterator[TestClient]:
    with site() as made:
        yield made


def _cli_json(config: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> Any:
    assert main([*args, "--config", str(config), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_results_are_the_command_lines_objects(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    config = client.config_path  # type: ignore[attr-defined]
    for query, arguments in (
        ("", ()),
        ("?camera=cam-07&label=female", ("--camera", "cam-07", "--label", "female")),
        ("?camera=cam-07&camera=cam-01&min_probability=0.7", ("--camera", "cam-07", "--camera", "cam-01",
                                                              "--min-probability", "0.7")),
        ("?since=2026-11-25T08:30&until=2026-11-25T09:30", ("--since", "2026-11-25T08:30",
                                                            "--until", "2026-11-25T09:30")),
    ):  # fmt: skip
        response = client.get(f"/api/results{query}")
        assert response.status_code == 200, response.text
        assert response.json() == _cli_json(config, "results", *arguments, capsys=capsys), query


def test_results_page_on_with_the_link_header(client: TestClient) -> None:
    first = client.get("/api/results?limit=4")
    assert [row["id"] for row in first.json()] == [6, 5, 4, 3]
    following = first.links["next"]["url"]
    second = client.get(following)
    assert [row["id"] for row in second.json()] == [2, 1]
    assert "next" not in second.links


def test_summary_is_the_command_lines_and_follows_the_time_zone(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    config = client.config_path  # type: ignore[attr-defined]
    response = client.get("/api/summary?by=camera,hour")
    assert response.json() == _cli_json(config, "summary", "--by", "camera,hour", capsys=capsys)
    # Kolkata is UTC+5:30: 08:00, 08:20, 08:40 UTC are 13:30-14:10 local, across two local hours.
    hours = client.get("/api/summary?by=hour&tz=Asia/Kolkata&camera=cam-07").json()
    assert [(row["hour"], row["total"]) for row in hours] == [
        ("2026-11-25T13:00:00+05:30", 2),
        ("2026-11-25T14:00:00+05:30", 2),
    ]
    assert client.get("/api/summary?by=hour,day").status_code == 422
    assert client.get("/api/summary?tz=Mars/Olympus").status_code == 422


def test_a_frame_is_served_as_a_thumbnail_and_a_gone_one_is_404(client: TestClient) -> None:
    response = client.get("/api/frames/1/image?size=32")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(response.content)).size) == 32
    assert client.get("/api/frames/5/image").status_code == 404  # its file is gone
    assert client.get("/api/frames/999/image").status_code == 404  # no such row
    assert client.get("/api/frames/1/image?size=99999").status_code == 422


def test_a_forged_stored_path_outside_processed_is_refused(client: TestClient) -> None:
    response = client.get("/api/frames/6/image")
    assert response.status_code == 403
    assert b"not for the browser" not in response.content


def test_reviews_go_to_their_own_table(client: TestClient, database_url: str) -> None:
    response = client.post("/api/results/2/review", json={"label": "male"})
    assert response.status_code == 200, response.text
    assert response.json()["reviewer"] == "local" and response.json()["label"] == "male"
    assert client.post("/api/results/2/review", json={"label": "unsure"}).status_code == 200
    assert client.post("/api/results/999/review", json={"label": "male"}).status_code == 404
    assert client.post("/api/results/2/review", json={"label": "cat"}).status_code == 422
    reviews = query_url(database_url, "SELECT result_id, label, reviewer FROM reviews ORDER BY id")
    assert reviews == [(2, "male", "local"), (2, "unsure", "local")]
    # The model's row is never rewritten.
    assert query_url(database_url, "SELECT label FROM results WHERE id = 2") == [("female",)]


def test_a_frame_that_could_not_be_classified_is_not_reviewed(
    client: TestClient, database_url: str, tmp_path: Path
) -> None:
    # A failed row has no prediction to review: the API and the page's form both refuse with one
    # clear line (409, never a 500), and its page offers no review buttons.
    unreadable = tmp_path / "failed" / "7.bmp"
    unreadable.write_bytes(b"BM not a picture")
    engine = make_engine(database_url, busy_timeout_ms=1000)
    with engine.begin() as connection:
        connection.execute(insert(Result).values(
            frame_key="failed-7", source_path="7.bmp", stored_path=str(unreadable), received_at=BASE,
            processed_at=BASE, status="failed", error="not a recognised image format",
        ))  # fmt: skip
    engine.dispose()
    assert query_url(database_url, "SELECT id FROM results WHERE status = 'failed'") == [(7,)]
    refused = client.post("/api/results/7/review", json={"label": "male"})
    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"] == (
        "frame 7 could not be classified (status failed): there is no prediction to review"
    )
    page = client.get("/frames/7")
    assert page.status_code == 200
    assert 'action="/frames/7/review"' not in page.text and "no prediction to review" in page.text
    form = {"label": "female", "csrf_token": client.cookies[CSRF_COOKIE], "next": "/frames/7"}
    posted = client.post("/frames/7/review", data=form, follow_redirects=False)
    assert posted.status_code == 409 and "could not be classified" in posted.json()["detail"]
    assert query_url(database_url, "SELECT count(*) FROM reviews") == [(0,)]
    # A classified frame's page keeps its buttons.
    assert 'action="/frames/1/review"' in client.get("/frames/1").text


def test_the_pages_render(client: TestClient) -> None:
    for path in ("/", "/?days=1", "/?days=30", "/review", "/review?all=true&camera=cam-07", "/frames/1"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        assert "cctv-gender" in response.text
    assert client.get("/frames/999").status_code == 404
    review = client.get("/review").text
    # Least confident first: probability 0.55 (id 1) before 0.65 (id 2).
    assert review.index('data-id="1"') < review.index('data-id="2"')


def test_the_review_filter_form_as_a_browser_sends_it(client: TestClient) -> None:
    # A form sends its empty fields too: no camera typed, "either" label.
    sent = client.get("/review?camera=&since=&until=&label=")
    assert sent.status_code == 200, sent.text[:300]
    assert sent.text.count('data-id="') == 6
    females = client.get("/review?camera=&since=&until=&label=female").text
    assert {int(found) for found in re.findall(r'data-id="(\d+)"', females)} == {2, 4}


def test_an_empty_camera_in_the_api_is_no_filter(client: TestClient) -> None:
    # As on the pages (README's API table says so), unlike the command line's `--camera ''`.
    every = client.get("/api/results").json()
    assert every and client.get("/api/results?camera=").json() == every


def test_an_empty_camera_on_the_dashboard_is_any_camera(client: TestClient, database_url: str) -> None:
    # As on the review page: camera= names no camera, so the charts are those of every camera
    # (it used to ask for camera IN ('') and draw nothing).
    now = datetime.now(UTC).replace(microsecond=0)
    engine = make_engine(database_url, busy_timeout_ms=1000)
    with engine.begin() as connection:
        for key, camera in (("now-top", None), ("now-07", "cam-07")):
            connection.execute(insert(Result).values(
                frame_key=key, source_path=f"{key}.bmp", stored_path=f"/processed/{key}.bmp",
                received_at=now, processed_at=now, file_mtime=now, camera=camera, status="ok",
                label="male", probability=0.9, model_version="v1",
            ))  # fmt: skip
    engine.dispose()
    every = re.findall(r"<figcaption>.*</figcaption>", client.get("/").text)
    assert "(no camera)" in "".join(every)
    for query in ("?camera=", "?camera=&days=7"):
        assert re.findall(r"<figcaption>.*</figcaption>", client.get(f"/{query}").text) == every, query
    named = client.get("/?camera=&camera=cam-07").text
    assert "(no camera)" not in named and "<strong>cam-07</strong>" in named


def test_the_pages_name_frames_without_a_camera_in_one_wording(client: TestClient, database_url: str) -> None:
    # The dashboard's failed list left the cell blank, the review grid said "no camera", the
    # charts "(no camera)": now all say NO_CAMERA, as the command line's tables do.
    engine = make_engine(database_url, busy_timeout_ms=1000)
    with engine.begin() as connection:
        for key, status in (("top-ok", "ok"), ("top-failed", "failed")):
            connection.execute(insert(Result).values(
                frame_key=key, source_path=f"{key}.bmp", stored_path=f"/processed/{key}.bmp",
                received_at=BASE, processed_at=BASE, status=status, model_version="v1",
                label="male" if status == "ok" else None, probability=0.9 if status == "ok" else None,
            ))  # fmt: skip
    engine.dispose()
    assert f"<td>{NO_CAMERA}</td>" in client.get("/").text
    assert f"· {NO_CAMERA}</div>" in client.get("/review").text


def test_a_token_is_needed_for_every_request(site: Callable[..., TestClient], database_url: str) -> None:
    with site(token=TOKEN, token_name="alice") as client:
        for path in ("/api/results", "/api/summary", "/api/frames/1/image", "/healthz"):
            assert client.get(path).status_code == 401, path
        page = client.get("/review")
        assert page.status_code == 401 and 'name="token"' in page.text  # the login form
        assert client.get("/api/results", headers={"Authorization": "Bearer wrong"}).status_code == 401
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/api/results", headers=bearer).status_code == 200
        # A bearer call is no browser's: it needs no CSRF token.
        posted = client.post("/api/results/1/review", json={"label": "female"}, headers=bearer)
        assert posted.status_code == 200
    assert query_url(database_url, "SELECT reviewer FROM reviews") == [("alice",)]


def test_the_login_form_sets_a_session(site: Callable[..., TestClient]) -> None:
    with site(token=TOKEN) as client:
        client.get("/login")
        csrf = client.cookies[CSRF_COOKIE]
        refused = client.post("/login", data={"token": "nope", "csrf_token": csrf}, follow_redirects=False)
        assert refused.status_code == 401
        assert client.post("/login", data={"token": TOKEN, "csrf_token": "forged"}).status_code == 403
        done = client.post("/login", data={"token": TOKEN, "csrf_token": csrf, "next": "//evil.example/"},
                           follow_redirects=False)  # fmt: skip
        assert done.status_code == 303 and done.headers["location"] == "/"
        assert SESSION_COOKIE in client.cookies
        assert client.get("/review").status_code == 200
        assert client.get("/api/results").status_code == 200


def test_browser_posts_need_the_csrf_token(client: TestClient, database_url: str) -> None:
    client.get("/review")  # sets the CSRF cookie, as a browser's first page would
    csrf = client.cookies[CSRF_COOKIE]
    # A cookie-carrying (browser) request without the token, or with a wrong one: refused.
    assert client.post("/api/results/1/review", json={"label": "male"}).status_code == 403
    wrong = {CSRF_HEADER: "x" * 43}
    assert client.post("/api/results/1/review", json={"label": "male"}, headers=wrong).status_code == 403
    # Another site's page posting here: refused whatever it sends.
    evil = {CSRF_HEADER: csrf, "Origin": "http://evil.example"}
    assert client.post("/api/results/1/review", json={"label": "male"}, headers=evil).status_code == 403
    form = {"label": "female", "csrf_token": "forged", "next": "/review"}
    assert client.post("/frames/1/review", data=form, follow_redirects=False).status_code == 403
    assert query_url(database_url, "SELECT count(*) FROM reviews") == [(0,)]
    ours = {CSRF_HEADER: csrf, "Origin": "http://127.0.0.1"}
    assert client.post("/api/results/1/review", json={"label": "male"}, headers=ours).status_code == 200
    form["csrf_token"] = csrf
    posted = client.post("/frames/1/review", data=form, follow_redirects=False)
    assert posted.status_code == 303 and posted.headers["location"] == "/review"
    assert query_url(database_url, "SELECT label FROM reviews ORDER BY id") == [("male",), ("female",)]


def test_an_origin_that_is_no_url_is_refused_not_a_500(site: Callable[..., TestClient]) -> None:
    broken = {"Origin": "http://[::1"}  # urlsplit cannot read it
    with site() as client:
        assert client.post("/api/results/1/review", json={"label": "male"}, headers=broken).status_code == 403
    with site(token=TOKEN) as client:  # the login form is open to anyone who reaches the port
        assert client.post("/login", data={"token": "x"}, headers=broken).status_code == 403


def test_a_body_over_64_kib_is_refused_before_it_is_read(site: Callable[..., TestClient]) -> None:
    big = b"a" * (MAX_BODY_BYTES + 1)
    with site(token=TOKEN) as client:  # the login form: open to anyone who reaches the port
        sized = client.post("/login", data={"token": "x"}, files={"upload": ("f", big)})
        assert sized.status_code == 413 and "64 KiB" in sized.json()["detail"]
        # No Content-Length (chunked): cut once what was read adds up to more.
        streamed = client.post("/login", content=iter([big[:40_000], big[40_000:]]),
                               headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert streamed.status_code == 413
    with site() as client:
        review = b'{"label": "male", "note": "' + big + b'"}'
        headers = {"Content-Type": "application/json"}
        assert (
            client.post("/api/results/1/review", content=iter([review]), headers=headers).status_code == 413
        )
        assert client.post("/api/results/1/review", json={"label": "male"}).status_code == 200


def test_healthz_answers_with_the_status(client: TestClient) -> None:
    response = client.get("/healthz")
    # No daemon runs here, nothing waits: healthy; the code follows the body's verdict.
    assert response.json()["healthy"] is (response.status_code == 200)
    assert response.status_code == 200


def test_without_a_token_only_loopback_names_are_answered(client: TestClient) -> None:
    # DNS rebinding: another site's name pointed at 127.0.0.1 must not make its pages "same origin".
    rebound = client.get("/api/results", headers={"Host": "attacker.example:8600"})
    assert rebound.status_code == 400 and "cam-07" not in rebound.text
    assert client.get("/api/results", headers={"Host": "localhost:8600"}).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/api/frames/99999999999999999999/image",
        "/frames/99999999999999999999",
        "/api/results?before=9223372036854775808",
        "/api/summary?by=hour&tz=" + "a" * 300,
        "/api/results?since=1e308d",
        "/api/summary?by=minute",
        # A NUL byte PostgreSQL's text cannot hold: the request's fault, not the database's (503).
        "/api/results?camera=%00",
        "/api/summary?model=cam%00",
        "/review?camera=%00",
        "/?camera=%00",
    ],
)
def test_odd_parameters_are_4xx_never_500(client: TestClient, path: str) -> None:
    assert 400 <= client.get(path).status_code < 500


def test_an_id_past_any_row_is_422_on_a_review(client: TestClient) -> None:
    assert client.post("/api/results/99999999999999999999/review", json={"label": "male"}).status_code == 422


def test_a_stored_path_that_is_no_absolute_path_is_refused(
    client: TestClient, database_url: str, tmp_path: Path
) -> None:
    from sqlalchemy import update

    from watcher.intake.stored_frames import FrameRefused, frame_file
    from watcher.store.engine import make_engine
    from watcher.store.schema import Result

    engine = make_engine(database_url, busy_timeout_ms=1000)
    with engine.begin() as connection:  # relative: it would resolve against the server's folder
        connection.execute(update(Result).where(Result.id == 1).values(stored_path="cam-07/0.bmp"))
    engine.dispose()
    assert client.get("/api/frames/1/image").status_code == 403
    # A NUL byte (PostgreSQL's text cannot even hold one; SQLite's can) is no path either.
    with pytest.raises(FrameRefused):
        frame_file(f"{tmp_path}/processed/cam-07/1.bmp\x00.txt", roots=(tmp_path / "processed",))


def test_paging_links_are_relative_and_the_docs_load_nothing_from_outside(client: TestClient) -> None:
    link = client.get("/api/results?limit=2").headers["Link"]
    assert link.startswith("</api/results?") and "before=5" in link
    assert client.get("/api/docs").status_code == 404  # FastAPI's docs page pulls from a CDN
    assert client.get("/api/openapi.json").json()["info"]["title"] == "cctv-gender"


def test_refusals_carry_the_security_headers(site: Callable[..., TestClient]) -> None:
    with site(token=TOKEN) as client:
        refused = client.get("/review?camera=cam-07")
        assert refused.status_code == 401 and refused.headers["X-Frame-Options"] == "DENY"
        assert 'value="/review?camera=cam-07"' in refused.text  # back to the same filters after login


@pytest.mark.parametrize(
    "token", ["short", " s3cret-token-for-tests ", "s3cret-tøken-for-tests", "two words here ok"]
)
def test_a_token_that_cannot_work_is_a_config_error(
    make_config: Callable[..., Path], token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_config(web={"token": token})
    assert main(["serve", "--config", str(path)]) == 2
    assert "web.token: must be at least 16 printable ASCII characters" in capsys.readouterr().err
