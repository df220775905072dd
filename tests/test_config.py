from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from tests.helpers import write_config
from watcher.config import Config, ConfigError, ConfigSource, find_config, load_config

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config.toml"


def test_defaults_resolve_against_the_config_folder(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "config.toml", {}))

    assert config.paths.inbox == tmp_path / "inbox"
    assert config.in_progress == tmp_path / "inbox" / ".in-progress"
    assert config.database_url == f"sqlite:///{tmp_path / 'data' / 'results.sqlite3'}"
    assert config.registry_dir == tmp_path / "data" / "models"
    assert config.batch.size == 32 and config.batch.max_wait_ms == 500
    assert config.model.clip == "openai/clip-vit-base-patch32"


def test_repository_config_is_valid_and_its_values_are_the_defaults() -> None:
    config = load_config(REPO_CONFIG)
    assert config.paths.inbox == REPO_CONFIG.parent / "inbox"
    assert config.source == REPO_CONFIG
    # Validated in the same folder, the file and an empty config are the same configuration.
    assert config == Config.model_validate({}, context=ConfigSource(REPO_CONFIG))


@dataclass(frozen=True)
class Documented:
    comment: str
    commented_out: bool
    value: str | None


_TABLE = re.compile(r"^\[(?P<name>[a-z_.]+)\]$")
_KEY = re.compile(r"^(?P<commented_out># )?(?P<key>[a-z_]+) = (?P<value>.+)$")


def _documented(text: str) -> dict[str, Documented]:
    """Every table and key of config.toml (keys shown commented out too) with the comment lines
    right above it, joined into one sentence."""
    found: dict[str, Documented] = {}
    table, comment = "", []
    for line in text.splitlines():
        if match := _TABLE.match(line):
            table = match["name"]
            found[table] = Documented(" ".join(comment), commented_out=False, value=None)
        elif match := _KEY.match(line):
            found[f"{table}.{match['key']}"] = Documented(
                " ".join(comment), commented_out=bool(match["commented_out"]), value=match["value"]
            )
        elif line.startswith("#"):
            comment.append(line.removeprefix("#").strip())
            continue
        comment = []
    return found


def _described(model: type[BaseModel], prefix: str = "") -> dict[str, FieldInfo]:
    """Every section and key of the model, dotted, with its field."""
    fields: dict[str, FieldInfo] = {}
    for name, field in model.model_fields.items():
        fields[prefix + name] = field
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            fields |= _described(field.annotation, f"{prefix}{name}.")
    return fields


def test_config_toml_documents_every_key_with_its_description() -> None:
    documented = _documented(REPO_CONFIG.read_text(encoding="utf-8"))
    described = _described(Config)

    assert sorted(documented) == sorted(described), "config.toml and the model name different keys"
    differing = {
        key: (documented[key].comment, " ".join((field.description or "").split()))
        for key, field in described.items()
        if not field.description or documented[key].comment != " ".join(field.description.split())
    }
    assert differing == {}, "(config.toml's comment, the field's description) differ"
    # A key left out means "not set": only keys whose default is None are shown commented out.
    unset = {key for key, field in described.items() if field.default is None}
    assert {key for key, doc in documented.items() if doc.commented_out} == unset


def test_the_commented_out_examples_are_valid_values(tmp_path: Path) -> None:
    examples = {key: doc for key, doc in _documented(REPO_CONFIG.read_text()).items() if doc.commented_out}
    assert examples
    for key, doc in examples.items():
        *tables, name = key.split(".")
        raw: dict[str, Any] = {name: tomllib.loads(f"v = {doc.value}")["v"]}
        for table in reversed(tables):
            raw = {table: raw}
        config = Config.model_validate(raw, context=ConfigSource(tmp_path / "config.toml"))
        section: Any = config
        for part in key.split("."):
            section = getattr(section, part)
        assert section is not None, key


@pytest.mark.parametrize("placeholder", ["", None], ids=["empty_string", "left_out"])
def test_optional_settings_not_set(tmp_path: Path, placeholder: str | None) -> None:
    sections: dict[str, dict[str, Any]] = {}
    if placeholder is not None:  # how earlier config files said "not set"
        sections = {
            "model": {"registry": ""},
            "training": {"feature_cache": ""},
            "database": {"url": ""},
            "metrics": {"listen": ""},
        }
    config = load_config(write_config(tmp_path / "config.toml", sections))

    assert config.model.registry is None and config.training.feature_cache is None
    assert config.database.url is None and config.metrics.listen is None
    assert config.registry_dir == tmp_path / "data" / "models"
    assert config.feature_cache_dir == tmp_path / "data" / "feature-cache"
    assert config.database_url == f"sqlite:///{tmp_path / 'data' / 'results.sqlite3'}"


def test_optional_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "site"
    folder.mkdir()
    sections = {"model": {"registry": "heads"}, "training": {"feature_cache": "../cache"}}

    config = load_config(write_config(folder / "config.toml", sections))

    assert config.registry_dir == folder / "heads"
    assert config.feature_cache_dir == tmp_path / "cache"
    assert config.source == folder / "config.toml"


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
            {"batch": {"gpu_lanes": 1}},
            "batch.gpu_lanes: Input should be greater than or equal to 2",
            id="one_gpu_lane",
        ),
        pytest.param(
            {"batch": {"gpu_lanes": 17}},
            "batch.gpu_lanes: Input should be less than or equal to 16",
            id="too_many_gpu_lanes",
        ),
        pytest.param(
            {"batch": {"gil_switch_interval_ms": 0}},
            "batch.gil_switch_interval_ms: Input should be greater than or equal to 0.01",
            id="no_switch_interval",
        ),
        # TOML's inf passed every `gt=0` bound: `status` never called a stall, and the daemon's
        # wait for its next rescan (poll_scan_s, rescan_interval_s) raises OverflowError.
        *(
            pytest.param(
                {section: {key: float("inf")}},
                f"{section}.{key}: Input should be a finite number",
                id=f"{key}_inf",
            )
            for section, key in (
                ("status", "stall_after_s"),
                ("inbox", "poll_scan_s"),
                ("inbox", "readiness_timeout_s"),
                ("inbox", "rescan_interval_s"),
                ("inbox", "remove_empty_folders_after_s"),
                ("training", "learning_rate"),
            )
        ),
        # A finite but huge one overflowed the same waits (time_t): every interval and timeout
        # is at most a year.
        *(
            pytest.param(
                {section: {key: value}},
                # The limit is named: 31536000000 alone does not say "a year" (of milliseconds).
                f"{section}.{key}: Input should be less than or equal to {limit}, a year (got ",
                id=f"{key}_over_a_year",
            )
            for section, key, value, limit in (
                ("status", "stall_after_s", 1e308, 31536000),
                ("inbox", "poll_scan_s", 1e10, 31536000),
                ("inbox", "readiness_timeout_s", 1e308, 31536000),
                ("inbox", "rescan_interval_s", 1e308, 31536000),
                ("inbox", "remove_empty_folders_after_s", 1e308, 31536000),
                ("inbox", "settle_ms", 10**13, 31536000000),
                ("inbox", "poll_interval_ms", 10**13, 31536000000),
                ("batch", "max_wait_ms", 10**13, 31536000000),
            )
        ),
        # `train` ended in a traceback: Adam at 1e30 took the head's outputs to nan (torch's "all
        # elements of input should be between 0 and 1"), a batch past sys.maxsize Keras's islice.
        pytest.param(
            {"training": {"learning_rate": 1e30}},
            "training.learning_rate: Input should be less than or equal to 1",
            id="learning_rate_over_one",
        ),
        pytest.param(
            {"training": {"batch_size": 10**20}},
            "training.batch_size: Input should be less than or equal to 1000000",
            id="training_batch_past_a_million",
        ),
        pytest.param(
            {"status": {"stall_after_s": float("nan")}},
            "status.stall_after_s: Input should be a finite number (got nan)",
            id="stall_after_s_nan",
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
        pytest.param({"paths": {"data": 3}}, "paths.data: Input should be a valid string", id="not_text"),
        pytest.param(
            {"model": {"registry": 3}},
            "model.registry: Input should be a valid string",
            id="optional_not_text",
        ),
        pytest.param(
            {"metrics": {"listen": "9464"}}, "metrics.listen: must be HOST:PORT", id="listen_without_host"
        ),
        pytest.param(
            {"metrics": {"listen": "127.0.0.1:9464 "}},
            "metrics.listen: must be HOST:PORT with no space in it",
            id="metrics_listen_with_a_space",
        ),
        pytest.param(
            {"web": {"listen": " 127.0.0.1:8600"}},
            "web.listen: must be HOST:PORT with no space in it",
            id="web_listen_with_a_space",
        ),
        pytest.param(
            {"training": {"validation_fraction": 0.45, "test_fraction": 0.4}},
            "training.test_fraction: with training.validation_fraction it leaves under 20% to train on",
            id="nothing_left_to_train_on",
        ),
        pytest.param(
            # SQLite's busy_timeout and PostgreSQL's lock_timeout are C ints: past one, SQLite
            # silently waits not at all and PostgreSQL refuses every connection.
            {"database": {"busy_timeout_ms": 2**31}},
            "database.busy_timeout_ms: Input should be less than or equal to 2147483647",
            id="busy_timeout_past_a_c_int",
        ),
        pytest.param(
            {"paths": {"data": "inbox/state"}},
            "paths.data: the database file must not be inside paths.inbox",
            id="database_in_the_inbox",
        ),
        # Root running install.sh or selftest, and the service's user, each read `~` as their own home.
        pytest.param(
            {"paths": {"inbox": "~/frames"}}, "paths.inbox: starts with ~, a different home", id="home_inbox"
        ),
        pytest.param(
            {"model": {"registry": "~cctv-gender/models"}},
            "model.registry: starts with ~, a different home",
            id="home_of_a_named_user",
        ),
        pytest.param(
            {"database": {"url": "sqlite:///~/results.sqlite3"}},
            "database.url: starts with ~, a different home",
            id="home_in_a_sqlite_url",
        ),
        # `./~` is `~` to a Path: the daemon would have taken its own home for the file.
        pytest.param(
            {"database": {"url": "sqlite:///./~/results.sqlite3"}},
            "database.url: starts with ~, a different home",
            id="home_behind_a_dot_in_a_sqlite_url",
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
    from watcher.commands.main import main

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


def test_every_problem_is_reported_one_line_each(tmp_path: Path) -> None:
    sections = {
        "paths": {"inbox": "a", "processed": "a"},
        "batch": {"size": 0, "sise": 3},
        "model": {"device": "tpu"},
        "model.zero_shot": {"male": ["a man", ""]},
        "training": {"validation_fraction": 0.45, "test_fraction": 0.45},
        "metrics": {"listen": "nowhere"},
    }
    path = write_config(tmp_path / "config.toml", sections)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    lines = str(caught.value).splitlines()
    assert [line.split(": ")[1] for line in lines] == [
        "paths.processed",
        "batch.size",
        "batch.sise",
        "model.device",
        "model.zero_shot.male",
        "training.test_fraction",
        "metrics.listen",
    ]
    assert all(line.startswith(f"{path}: ") for line in lines)


def test_a_config_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    # Found by review: "not valid TOML: Invalid statement (at line 1, column 1)", its cause invisible.
    path = tmp_path / "config.toml"
    path.write_bytes(b"\xef\xbb\xbf" + b'[display]\ntimezone = "UTC"\n')
    assert load_config(path).display.timezone == "UTC"


def test_invalid_toml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[batch\nsize = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        load_config(path)
    assert "\n" not in str(caught.value)


def test_missing_config_lists_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        "watcher.config.DEFAULT_CONFIG_LOCATIONS", (Path("config.toml"), tmp_path / "etc.toml")
    )
    with pytest.raises(ConfigError, match="looked for config.toml or .*etc.toml"):
        find_config(None)


def test_a_config_path_that_is_a_folder_is_named_as_one(tmp_path: Path) -> None:
    # `--config /etc/cctv-gender` (the folder, not the file), or the folder a container's bind
    # mount makes when its source file is missing: "config file not found" sent the operator
    # looking for a file that is not missing.
    (tmp_path / "config.toml").mkdir()
    with pytest.raises(ConfigError, match="config.toml: is a folder, not a config file"):
        find_config(tmp_path / "config.toml")


def test_default_config_is_the_working_directory_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path / "config.toml", {})
    assert find_config(None) == Path("config.toml")


def test_cli_stops_with_one_line_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from watcher.commands.main import main

    path = write_config(tmp_path / "config.toml", {"batch": {"max_wait_ms": -1}})

    code = main(["watch", "--once", "--config", str(path)])

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "batch.max_wait_ms" in err and "Traceback" not in err
    # Nothing was created: startup stopped before touching the disk.
    assert not (tmp_path / "inbox").exists()


def test_the_cli_lists_every_problem_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from watcher.commands.main import main

    path = write_config(tmp_path / "config.toml", {"batch": {"size": 0, "max_wait_ms": -1}})

    assert main(["status", "--config", str(path)]) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "Traceback" not in err
    assert "batch.size" in err.splitlines()[0] and "batch.max_wait_ms" in err.splitlines()[1]


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://", "sqlite:///"])
def test_an_in_memory_sqlite_database_is_refused(tmp_path: Path, url: str) -> None:
    # Each connection would have its own empty database: the daemon's rows would vanish.
    with pytest.raises(ConfigError, match="database.url: an in-memory SQLite database keeps nothing"):
        load_config(write_config(tmp_path / "config.toml", {"database": {"url": url}}))
