"""The loop the web app closes: frames classified by the daemon → 50 reviewed through the API →
`dataset export --reviewed` → `train` (report, gated promotion) → the daemon serves the new head.
The frames are striped (vertical: reviewers call them female; horizontal: male), so the head has
something to learn that the random-weight zero-shot model does not know."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from model.registry import current_version
from model.synthetic import write_striped_bmp
from tests.helpers import query
from watcher.commands.main import main
from watcher.config import load_config
from watcher.store.opening import open_database
from watcher.web.app import create_app
from watcher.web.context import WebContext
from watcher.web.security import Gate

FRAMES = 60
REVIEWED = 50


def _drop_frames(inbox: Path, *, first: int, count: int) -> None:
    for index in range(first, first + count):
        vertical = index % 2 == 0
        name = f"{'v' if vertical else 'h'}-{index:03d}.bmp"
        write_striped_bmp(inbox / "cam-01" / name, vertical=vertical, seed=index)


def test_reviews_train_the_next_head(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = make_config()
    _drop_frames(tmp_path / "inbox", first=0, count=FRAMES)
    assert main(["watch", "--once", "--config", str(config_path)]) == 0

    config = load_config(config_path)
    reader = open_database(config, migrate=False, read_only=True)
    writer = open_database(config, migrate=False)
    gate = Gate(token=None, token_name="operator")
    app = create_app(WebContext(config=config, reader=reader, writer=writer, gate=gate))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        rows = client.get(f"/api/results?limit={FRAMES}").json()
        assert len(rows) == FRAMES
        for row in rows[:REVIEWED]:
            said = "female" if Path(row["source_path"]).name.startswith("v-") else "male"
            assert client.post(f"/api/results/{row['id']}/review", json={"label": said}).status_code == 200
    reader.dispose()
    writer.dispose()
    database = tmp_path / "data" / "results.sqlite3"
    assert query(database, "SELECT count(*) FROM reviews") == [(REVIEWED,)]

    dataset = tmp_path / "reviewed"
    assert main(["dataset", "export", str(dataset), "--reviewed", "--config", str(config_path)]) == 0
    exported = len(list((dataset / "FEMALE").iterdir())) + len(list((dataset / "MALE").iterdir()))
    assert exported == REVIEWED

    assert main(["train", "--data", str(dataset), "--config", str(config_path)]) == 0
    report = capsys.readouterr().out
    version = current_version(config.registry_dir)
    assert version is not None and "promoted: accuracy" in report, report

    # The next run serves the promoted head (a running daemon switches at its next batch:
    # tests/test_head_reload.py).
    _drop_frames(tmp_path / "inbox", first=FRAMES, count=4)
    assert main(["watch", "--once", "--config", str(config_path)]) == 0
    newest = query(database, "SELECT DISTINCT model_version FROM results WHERE id > ?", FRAMES)
    assert newest == [(version,)]
