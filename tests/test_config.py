from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import write_config
from watcher.commands.main import main
from watcher.config import ConfigError, find_config, load_config


def test_defaults_resolve_against_the_config_folder(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "config.toml", {}))

    assert config.paths.inbox == tmp_path / "inbox"
    assert config.in_progress == tmp_path / "inbox" / ".in-progress"
    assert config.database_url == f"sqlite:///{tmp_path / 'data' / 'results.sqlite3'}"
    assert config.registry_dir == tmp_path / "data" / "models"
    assert config.batch.size == 32 and config.batch.max_wait_ms == 500
    assert config.model.clip == "openai/clip-vit-base-patch32"


def test_repository_config_is_valid_and_documents_the_defaults() -> None:
    repo_config = Path(__file__).resolve().parent.parent / "config.toml"
    config = load_config(repo_config)
    assert config.paths.inbox == repo_config.parent / "inbox"
    assert config.model.device == "auto" and config.model.precision == "auto"


def test_a_local_clip_folder_resolves_against_the_config(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    config = load_config(write_config(tmp_path / "config.toml", {"model": {"clip": "weights"}}))
    assert config.model.clip == str(tmp_path / "weights")


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        pytest.param({"batch": {"sise": 3}}, "batch.sise: unknown key", id="unknown_key"),
        pytest.param({"surprise": {"x": 1}}, "surprise: unknown key", id="unknown_section"),
        pytest.param(
            {"batch": {"size": "32"}}, "batch.size: Input should be a valid integer", id="wrong_type"
        ),
        pytest.param(
            {"batch": {"size": 0}},
            "batch.size: Input should be greater than or equal to 1",
            id="impossible_value",
        ),
        pytest.param(
            {"model": {"device": "tpu"}},
            "model.device: must be 'auto', 'cpu', 'cuda' or 'cuda:N'",
            id="bad_device",
        ),
        pytest.param({"model": {"precision": "fp8"}}, "model.precision: Input should be", id="bad_precision"),
        pytest.param({"paths": {"inbox": ""}}, "paths.inbox: must not be empty", id="empty_path"),
        pytest.param(
            {"model.zero_shot": {"male": []}},
            "model.zero_shot.male: List should have at least 1 item",
            id="no_prompts",
        ),
        pytest.param(
            {"paths": {"inbox": "a", "processed": "a"}},
            "paths.processed: must differ from paths.inbox",
            id="same_folders",
        ),
        pytest.param(
            {"paths": {"inbox": "a", "failed": "a/failed"}},
            "paths.failed: must not be inside paths.inbox",
            id="nested_output",
        ),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, sections: dict, expected: str) -> None:
    path = write_config(tmp_path / "config.toml", sections)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        pytest.param(
            {"inbox": "{tmp}/in", "processed": "{tmp}/in/cam/.."},
            "paths.processed: must differ from paths.inbox",
            id="absolute_dotdot_is_the_inbox",
        ),
        pytest.param(
            {"inbox": "in", "failed": "elsewhere/../in/failed"},
            "paths.failed: must not be inside paths.inbox",
            id="relative_dotdot_inside_the_inbox",
        ),
        pytest.param(
            {"inbox": "{tmp}/srv/inbox", "processed": "{tmp}/srv/inbox/.."},
            "paths.inbox: must not be inside paths.processed",
            id="inbox_inside_processed",
        ),
        pytest.param(
            {"inbox": "srv/in", "failed": "srv"},
            "paths.inbox: must not be inside paths.failed",
            id="inbox_inside_failed",
        ),
        pytest.param(
            {"processed": "out", "failed": "{tmp}/out/"},
            "paths.failed: must differ from paths.processed",
            id="processed_is_failed",
        ),
        pytest.param(
            {"inbox": "{tmp}/inbox", "processed": "{tmp}/link-to-inbox"},
            "paths.processed: must differ from paths.inbox",
            id="symlink_to_the_inbox",
        ),
        pytest.param(
            {"inbox": "{tmp}/inbox", "failed": "{tmp}/link-to-inbox/failed"},
            "paths.failed: must not be inside paths.inbox",
            id="inside_a_symlink_to_the_inbox",
        ),
    ],
)
def test_folders_are_compared_as_the_filesystem_sees_them(
    tmp_path: Path, paths: dict[str, str], expected: str
) -> None:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "link-to-inbox").symlink_to(tmp_path / "inbox")
    sections = {"paths": {key: value.replace("{tmp}", str(tmp_path)) for key, value in paths.items()}}
    path = write_config(tmp_path / "config.toml", sections)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    message = str(caught.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message


def test_the_cli_refuses_a_disguised_inbox_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "processed").symlink_to(tmp_path / "inbox")
    path = write_config(tmp_path / "config.toml", {"paths": {"processed": str(tmp_path / "processed")}})

    assert main(["status", "--config", str(path)]) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "paths.processed" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("sqlite:///results.db", "sqlite:///{config}/results.db", id="relative"),
        pytest.param("sqlite:///../x.db", "sqlite:///{parent}/x.db", id="relative_up"),
        pytest.param(
            "sqlite:///db/r.sqlite3?timeout=30", "sqlite:///{config}/db/r.sqlite3?timeout=30", id="with_query"
        ),
        pytest.param("sqlite:////var/lib/r.sqlite3", "sqlite:////var/lib/r.sqlite3", id="absolute"),
        pytest.param("sqlite:///:memory:", "sqlite:///:memory:", id="memory"),
        pytest.param("sqlite://", "sqlite://", id="memory_by_default"),
        pytest.param(
            "postgresql+psycopg://user@db/cctv", "postgresql+psycopg://user@db/cctv", id="other_backend"
        ),
    ],
)
def test_a_relative_sqlite_url_resolves_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, expected: str
) -> None:
    folder = tmp_path / "site"
    folder.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the command runs from another folder: it must not matter

    config = load_config(write_config(folder / "config.toml", {"database": {"url": url}}))

    assert config.database_url == expected.format(config=folder, parent=tmp_path)


def test_invalid_toml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[batch\nsize = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_missing_config_lists_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        "watcher.config.DEFAULT_CONFIG_LOCATIONS", (Path("config.toml"), tmp_path / "etc.toml")
    )
    with pytest.raises(ConfigError, match="looked for config.toml or .*etc.toml"):
        find_config(None)


def test_default_config_is_the_working_directory_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path / "config.toml", {})
    assert find_config(None) == Path("config.toml")


def test_cli_stops_with_one_line_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path / "config.toml", {"batch": {"max_wait_ms": -1}})

    code = main(["watch", "--once", "--config", str(path)])

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "batch.max_wait_ms" in err and "Traceback" not in err
    # Nothing was created: startup stopped before touching the disk.
    assert not (tmp_path / "inbox").exists()
