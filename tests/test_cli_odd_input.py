"""Odd input at the operator's surface, each found by review: one clear line, never a traceback,
and nothing a file in the registry can do holds the daemon's loop or the web pages."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from model.registry import current_version, set_current
from tests.helpers import write_config, write_unknown_layer_head
from watcher.commands.main import main
from watcher.config import load_config
from watcher.store.engine import sqlite_file
from watcher.store.opening import open_database
from watcher.web.app import create_app
from watcher.web.context import WebContext
from watcher.web.security import Gate

TOKEN = "s3cret-token-for-tests"


def _site(tmp_path: Path, **sections: object) -> Path:
    config = write_config(tmp_path / "config.toml", {"display": {"timezone": "UTC"}, **sections})
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    return config


def _one_line(main_args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    code = main(main_args)
    error = capsys.readouterr().err
    assert code != 0 and error.count("\n") == 1 and "Traceback" not in error, (code, error)
    return error


@pytest.mark.parametrize("path", ["/healthz", "/"])
def test_web_app_survives_a_current_pointer_that_is_not_text(tmp_path: Path, path: str) -> None:
    # 047797f turned a non-UTF-8 `current` into RegistryError (a folder there is IsADirectoryError);
    # the web app handles only StorageError, and /healthz and the dashboard read the pointer when
    # no daemon instance reports its model: a 500 and a traceback in serve's log.
    config_path = _site(tmp_path)
    registry = tmp_path / "data" / "models"
    registry.mkdir(parents=True)
    (registry / "current").write_bytes(b"\xff\xfe")
    config = load_config(config_path)
    reader = open_database(config, migrate=False, read_only=True)
    writer = open_database(config, migrate=False)
    try:
        gate = Gate(token=None, token_name="local")
        app = create_app(WebContext(config=config, reader=reader, writer=writer, gate=gate))
        with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
            response = client.get(path)
        assert response.status_code != 500, (path, response.status_code, response.text[:200])
    finally:
        reader.dispose()
        writer.dispose()


def test_serve_a_listen_name_the_idna_codec_refuses_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 2dc8483 catches OSError around _bind; getaddrinfo raises UnicodeError (a ValueError) for
    # an empty or over-63-character label: "a..b", a typo'd "cctv-box..lan".
    config = _site(tmp_path, web={"token": TOKEN})
    error = _one_line(["serve", "--config", str(config), "--listen", "cctv-box..lan:8600"], capsys)
    assert "cctv-box..lan" in error


def test_db_copy_to_a_url_with_a_bad_port_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 7a0461b's guard catches ArgumentError/NoSuchModuleError/ImportError; make_url raises a bare
    # ValueError for a port that is not a number (database.url's validator turns the same into
    # a config error; --to has no validator).
    config = _site(tmp_path)
    error = _one_line(
        ["db", "copy", "--to", "postgresql+psycopg://user@host:54x2/db", "--config", str(config)], capsys
    )
    assert "--to" in error


def test_db_copy_refuses_an_in_memory_sqlite_uri(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # sqlite_file() accepts the URI form and returns Path("mem") for it, so the new in-memory
    # check passes it; SQLAlchemy opens it as a memory database: "copied N rows", then gone.
    config = _site(tmp_path)
    error = _one_line(
        ["db", "copy", "--to", "sqlite:///file:mem?mode=memory&uri=true", "--config", str(config)], capsys
    )
    assert "in-memory" in error


def test_a_database_a_newer_release_left_with_two_heads_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A newer release with an Alembic branch (two rows in alembic_version): current_revision()
    # (get_current_revision) raises alembic's CommandError before require_known_revision runs;
    # open_database does not translate it.
    config = _site(tmp_path)
    with sqlite3.connect(tmp_path / "data" / "results.sqlite3") as connection:
        connection.execute("INSERT INTO alembic_version VALUES ('0099_from_a_branch')")
    connection.close()
    for command in (["results"], ["db", "upgrade"]):
        capsys.readouterr()
        try:
            code = main([*command, "--config", str(config)])
        except Exception as error:  # noqa: BLE001
            pytest.fail(f"{command}: {type(error).__module__}.{type(error).__name__}: {error}")
        assert code == 1
        assert "0099_from_a_branch" in capsys.readouterr().err


def test_a_current_pointer_that_is_a_fifo_does_not_hold_the_daemons_loop(tmp_path: Path) -> None:
    # HeadReloader.check runs on the daemon's loop thread between batches; current_version opens
    # `current` with read_text, which blocks on a FIFO until a writer comes: the loop (and its
    # watchdog pings) stop. d808deb covers "not text, a folder, unreadable", not this.
    import os
    import threading
    from types import SimpleNamespace

    from watcher.pipeline.head_reload import HeadReloader

    registry = tmp_path / "models"
    registry.mkdir()
    reloader = HeadReloader(registry, load=lambda: pytest.fail("nothing to load"))  # type: ignore[arg-type,return-value]
    os.mkfifo(registry / "current")
    done = threading.Event()
    worker = threading.Thread(
        target=lambda: (reloader.check(serving=SimpleNamespace(version="v1")), done.set()),  # type: ignore[arg-type]
        daemon=True,
    )
    worker.start()
    finished = done.wait(3)
    if not finished:  # let the blocked open return
        descriptor = os.open(registry / "current", os.O_WRONLY | os.O_NONBLOCK)
        os.close(descriptor)
        worker.join(3)
    assert finished, "HeadReloader.check blocked on a FIFO named current"


# --- what held: legitimate pointers are still read ---------------------------------------------


@pytest.mark.parametrize("text", [b"v1", b"v1\n", b"v1\r\n", b"  v1 \n\n", b"v1\n" + b" " * 10_000])
def test_legitimate_pointer_forms_are_read(tmp_path: Path, text: bytes) -> None:
    (tmp_path / "current").write_bytes(text)
    assert current_version(tmp_path) == "v1"


def test_a_symlinked_pointer_is_read(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("v1\n")
    (tmp_path / "current").symlink_to(tmp_path / "elsewhere")
    assert current_version(tmp_path) == "v1"


# --- findings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("umask", "proc", "expected"),
    [(0o027, True, 0o640), (0o077, False, 0o600)],
    ids=["the unit's umask", "no /proc: as closed as can be"],
)
def test_the_pointer_takes_the_umasks_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask: int, proc: bool, expected: int
) -> None:
    # systemd/cctv-gender.service: UMask=0027, "Group cctv-gender (operators) may read the database
    # and registry". mkstemp made `current` 0600 whatever the umask: an operator in the group could
    # not read it, and `status` then called a healthy site unhealthy. Where the umask cannot be read
    # (no /proc), the fallback must not open what the umask would have closed.
    import model.registry_files as files

    if not proc:
        real = Path.read_text

        def no_proc(self: Path, *args: object, **kwargs: object) -> str:
            if str(self) == "/proc/self/status":
                raise FileNotFoundError(str(self))
            return real(self, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(files.Path, "read_text", no_proc)
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "head.keras").write_bytes(b"")
    old = os.umask(umask)
    try:
        set_current(tmp_path, "v1")
    finally:
        os.umask(old)
    assert (tmp_path / "current").stat().st_mode & 0o777 == expected


def test_a_sqlite_uri_file_under_a_folder_named_mode_memory_is_a_file(tmp_path: Path) -> None:
    # engine.sqlite_file: `"mode=memory" in database` looks at the path, not the query; the path
    # below is a real file to SQLite (file:/.../mode=memory-archive/results.db).
    folder = tmp_path / "mode=memory-archive"
    url = f"sqlite:///file:{folder}/results.db?uri=true"
    assert sqlite_file(url) == folder / "results.db"


def test_db_copy_to_a_real_file_under_a_folder_named_mode_memory_is_not_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _site(tmp_path)
    folder = tmp_path / "mode=memory-archive"
    folder.mkdir()
    capsys.readouterr()
    code = main(["db", "copy", "--to", f"sqlite:///file:{folder}/copy.db?uri=true", "--config", str(config)])
    assert code == 0, capsys.readouterr().err


def test_a_memdb_vfs_uri_is_in_memory(tmp_path: Path) -> None:
    # `vfs=memdb` keeps the database in memory, each connection its own (a name without a leading
    # "/"): db copy --to would report every row copied, then nothing is there.
    assert sqlite_file("sqlite:///file:copy.db?uri=true&vfs=memdb") is None


@pytest.mark.parametrize(
    ("section", "secret"),
    [
        # A refused connection: the open error named the URL as written (to the journal).
        ({"database": {"url": "postgresql+psycopg://cctv:hunter2@127.0.0.1:1/db"}}, "hunter2"),
        # libpq takes `?password=`: render_as_string(hide_password=True) hides only the other.
        ({"database": {"url": "postgresql+psycopg://cctv@127.0.0.1:1/db?password=hunter2"}}, "hunter2"),
        # A config error appended "(got '<input>')": the whole URL, or the refused token.
        ({"database": {"url": "postgresql+psycopg://cctv:hunter2@dbhost:54x2/db"}}, "hunter2"),
        ({"web": {"token": "correct horse battery staple 42"}}, "battery staple"),
    ],
    ids=["user-info password", "query password", "config error on the url", "config error on the token"],
)
def test_a_secret_is_never_printed_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: dict[str, object], secret: str
) -> None:
    pytest.importorskip("psycopg")
    config = write_config(tmp_path / "config.toml", {"display": {"timezone": "UTC"}, **section})
    error = _one_line(["status", "--config", str(config)], capsys)
    assert secret not in error, error


def test_a_fifo_metadata_file_does_not_hold_the_daemons_reload(tmp_path: Path) -> None:
    # 27266bf reads `current` without waiting; the reloader's load (load_serving_head ->
    # HeadMetadata.read -> read_text) then opens <version>/metadata.json, which blocks on a FIFO:
    # the daemon's loop (and its watchdog pings) stop at the next promotion or SIGHUP.
    from model.serving import load_serving_head

    registry = tmp_path / "models"
    (registry / "v1").mkdir(parents=True)
    (registry / "v1" / "head.keras").write_bytes(b"")
    os.mkfifo(registry / "v1" / "metadata.json")
    (registry / "current").write_text("v1\n")
    done = threading.Event()

    def load() -> None:
        try:
            load_serving_head(registry, clip=None, prompts={})  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001, S110
            pass
        done.set()

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    finished = done.wait(3)
    if not finished:
        descriptor = os.open(registry / "v1" / "metadata.json", os.O_WRONLY | os.O_NONBLOCK)
        os.close(descriptor)
        worker.join(3)
    assert finished, "loading the served head blocked on a FIFO metadata.json"


@pytest.mark.parametrize("command", [["status"], ["results"], ["db", "upgrade"]])
def test_a_database_path_that_is_a_folder_is_named_as_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    # A folder where the SQLite file should be (a `mkdir -p data/results.sqlite3` slip): readers
    # said "there is no database ... yet: the daemon makes it at its first start", which it does
    # not; `db upgrade` said SQLite's "unable to open database file".
    config = write_config(tmp_path / "config.toml", {"display": {"timezone": "UTC"}})
    (tmp_path / "data" / "results.sqlite3").mkdir(parents=True)
    error = _one_line([*command, "--config", str(config)], capsys)
    assert f"{tmp_path / 'data' / 'results.sqlite3'} is a folder, not a database file" in error


@pytest.mark.parametrize("command", [["status"], ["results"], ["db", "upgrade"]])
def test_a_data_folder_that_is_a_file_is_named_as_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    # paths.data naming a file: readers said the daemon would make the database at its first
    # start (it cannot), `db upgrade` said "cannot open the database ...: File exists".
    config = write_config(tmp_path / "config.toml", {"paths": {"data": "state"}})
    (tmp_path / "state").write_text("not a folder")
    error = _one_line([*command, "--config", str(config)], capsys)
    assert f"{tmp_path / 'state'} is a file, not a folder" in error


@pytest.mark.parametrize("content", [b"this is not a keras file", b""], ids=["text", "empty"])
def test_a_head_file_that_is_not_a_keras_archive_is_not_called_missing(
    tmp_path: Path, content: bytes
) -> None:
    # Keras says "File not found: filepath=.../head.keras. Please ensure the file is an accessible
    # `.keras` zip file" for any file that is not a zip: `models promote`, `evaluate` and the
    # daemon's start passed that on, sending the operator to look for a file that is there.
    from model.registry import HeadMetadata, RegistryError
    from model.serving import read_head_file

    (tmp_path / "head.keras").write_bytes(content)
    metadata = HeadMetadata(version="v1", clip_model="clip", feature_size=16, preprocessing_version="p1")
    with pytest.raises(RegistryError) as caught:
        read_head_file(tmp_path, metadata)
    assert "not found" not in str(caught.value) and "not a .keras archive" in str(caught.value)


@pytest.mark.parametrize("content", [b"", b"this is not a keras file"], ids=["empty", "text"])
def test_status_says_a_served_head_file_that_is_not_a_keras_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    # A copy of the registry cut short (an empty head.keras): the daemon stops at start on it,
    # while status said "health: ok" and named the version as served.
    config = write_config(tmp_path / "config.toml", {"display": {"timezone": "UTC"}})
    version = tmp_path / "data" / "models" / "v1"
    version.mkdir(parents=True)
    (version / "head.keras").write_bytes(content)
    metadata = '{"version": "v1", "clip_model": "clip", "feature_size": 8, "preprocessing_version": "p1"}'
    (version / "metadata.json").write_text(metadata, encoding="utf-8")
    (version.parent / "current").write_text("v1\n", encoding="utf-8")
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["status", "--config", str(config)]) == 1
    said = capsys.readouterr().out
    assert f"{version / 'head.keras'}: not a .keras archive" in said, said


def test_a_head_file_that_cannot_be_read_is_not_called_no_keras_archive(tmp_path: Path) -> None:
    # A zip this user may not read (the service user's 0600 file, promote run by an operator):
    # 36806f5 called it "not a .keras archive (a zip file)", sending one to retrain a good head.
    if os.geteuid() != 0:
        pytest.skip("needs root: chown, and setpriv to drop root's overrides")
    write_unknown_layer_head(tmp_path / "head.keras")
    os.chown(tmp_path / "head.keras", 12345, 12345)
    (tmp_path / "head.keras").chmod(0o600)
    script = (
        "import sys; from pathlib import Path; from model.registry import HeadMetadata\n"
        "from model.serving import read_head_file\n"
        "metadata = HeadMetadata(version='v1', clip_model='clip', feature_size=16,\n"
        "                        preprocessing_version='p1')\n"
        "try: read_head_file(Path(sys.argv[1]), metadata)\n"
        "except Exception as error: print(error)\n"
    )
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]
    said = subprocess.run(
        [*prefix, sys.executable, "-c", script, str(tmp_path)],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert "cannot be read: Permission denied" in said and "not a .keras archive" not in said, said


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(" sqlite:///{tmp}/copy.db", id="leading_space"),
        pytest.param("sqlite:///{tmp}/copy.db ", id="trailing_space"),
        pytest.param("postgresql+psycopg://user:hunter2@localhost/db\n", id="trailing_line_break"),
    ],
)
def test_db_copy_to_a_url_with_a_space_at_an_end_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    # In front, SQLAlchemy could not parse it (exit 1, "Could not parse SQLAlchemy URL", not
    # saying why); behind, the space became part of the name: a file `copy.db ` was made.
    config = _site(tmp_path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        main(["db", "copy", "--to", target.format(tmp=tmp_path), "--config", str(config)])
    error = capsys.readouterr().err
    assert refused.value.code == 2 and error.count("\n") == 1, error
    assert "argument --to: starts or ends with a space or line break" in error
    assert "hunter2" not in error
    assert not list(tmp_path.glob("copy.db*"))
