"""`cctv-gender selftest [--config PATH]`: is this install healthy? Run it first, before fetching
any weights.

A small random-weight CLIP is built in a temporary folder (model.synthetic: the real transformers
classes, saved and loaded with from_pretrained), and a few generated frames plus one broken one go
through the real pipeline (`build_daemon`, `run(once=True)`) into a temporary SQLite database.
Then probes of the configured site, which change nothing there: is `database.url` reachable
(read-only; a SQLite file that does not exist yet is not made), can the inbox be written (one
hidden file, made and removed), and may processed/, failed/ and the model registry be written
(asked of the kernel; nothing made in them); a missing folder is not made, only whether it could
be. Run as root, who may write anything, the folders are checked as the service's user
(watcher.service.access).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import ArgumentError

from model.messages import first_line
from watcher.commands.arguments import add_config, non_empty_type
from watcher.commands.exit_codes import EXIT_FAILURE, EXIT_OK
from watcher.config import Config, ConfigError, load_config
from watcher.errors import StartupError
from watcher.intake.folders import FOLDERS_MARK
from watcher.reports import RunReport
from watcher.service.access import Access, access_for
from watcher.store.engine import shown_url, sqlite_file
from watcher.store.errors import StorageError

HELP = "check the install: a small random CLIP and generated frames through the real pipeline"

GOOD_FRAMES = 4
BROKEN_FRAME = "cam-selftest/broken.bmp"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config(parser)
    parser.add_argument(
        "--as-user",
        type=non_empty_type,
        metavar="NAME",
        default=None,
        help="run as root: check the configured folders as this user (default: the User= of the "
        "installed cctv-gender unit), with the unit's Group= and SupplementaryGroups= if it sets them",
    )


def run(config: Config, args: argparse.Namespace) -> int:
    access = access_for(args.as_user)  # before the pipeline: a wrong name costs no model build
    checks = [
        *pipeline_checks(config),
        database_probe(config, access=access),
        inbox_probe(config, access=access),
        *folder_probes(config, access=access),
    ]
    print(render(checks))
    failed = [check.name for check in checks if not check.ok]
    print(f"selftest failed: {', '.join(failed)}" if failed else "selftest passed")
    return EXIT_FAILURE if failed else EXIT_OK


def render(checks: list[Check]) -> str:
    width = max(len(check.name) for check in checks)
    lines = [f"{'check':<{width}}  result  detail"]
    lines += [
        f"{check.name:<{width}}  {'ok' if check.ok else 'FAILED':<6}  {check.detail}" for check in checks
    ]
    return "\n".join(lines)


def pipeline_checks(config: Config) -> list[Check]:
    """The pipeline end to end, on generated input, in a temporary folder removed afterwards."""
    from transformers.utils import logging as hf_logging

    from model.synthetic import build_clip_checkpoint

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # transformers: unannotated
    with tempfile.TemporaryDirectory(prefix="cctv-gender-selftest-") as temporary:
        root = Path(temporary)
        try:
            clip = build_clip_checkpoint(root / "clip")
        except Exception as error:  # noqa: BLE001 - torch/transformers broken: that is the finding
            return [Check("model", False, f"cannot build a test CLIP: {first_line(error)}")]
        _write_frames(root / "inbox")
        try:
            test_config = load_config(_write_config(root, clip=clip, site=config))
            report = _run_once(test_config)
        except (StartupError, ConfigError, StorageError) as error:
            return [Check("pipeline", False, first_line(error))]
        return _inspect(test_config, report)


def _write_frames(inbox: Path) -> None:
    from model.synthetic import FrameMaker, write_bmp

    maker = FrameMaker(width=96, height=64)
    for index in range(GOOD_FRAMES - 1):
        maker.write(inbox / "cam-selftest" / f"frame-{index}.bmp", index)
    write_bmp(inbox / "frame-palette.bmp", mode="P", seed=3)  # a frame Pillow decodes
    broken = inbox / BROKEN_FRAME
    broken.write_bytes(b"this is not a picture\n" * 8)


def _write_config(root: Path, *, clip: Path, site: Config) -> Path:
    """A config for the temporary folder: the site's device, runtime and precision (so ONNX Runtime's
    export and gate run too where the site would use them), everything else local."""
    sections: dict[str, dict[str, object]] = {
        "paths": {name: str(root / name) for name in ("inbox", "processed", "failed", "data")},
        "model": {
            "clip": str(clip),
            "device": site.model.device,
            "runtime": site.model.runtime,
            "precision": site.model.precision,
        },
        "inbox": {"mode": "poll", "settle_ms": 0, "poll_interval_ms": 20},
        "batch": {"size": GOOD_FRAMES, "max_wait_ms": 50},
    }
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        # JSON strings, numbers and booleans are valid TOML values.
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path = root / "selftest.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _run_once(config: Config) -> RunReport:
    from watcher.pipeline.assembly import build_daemon

    with _quiet_logs():
        daemon = build_daemon(config, stop=threading.Event(), instance_name="selftest")
        return daemon.run(once=True)


@contextmanager
def _quiet_logs() -> Iterator[None]:
    """The pipeline's info lines would bury the table; errors still show."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def _inspect(config: Config, report: RunReport) -> list[Check]:
    from watcher.store.opening import open_database
    from watcher.store.queries import ResultFilter, count_results

    decoded = report.ok == GOOD_FRAMES and report.failed == 1
    checks = [
        Check(
            "decode",
            decoded,
            f"{report.ok} of {GOOD_FRAMES} generated frames classified, "
            f"{report.failed} of 1 broken frame failed",
        )
    ]
    try:
        engine = open_database(config, migrate=False, read_only=True)  # refuses a schema not at head
        rows = {status: count_results(engine, ResultFilter(status=status)) for status in ("ok", "failed")}
        engine.dispose()
    except (StartupError, StorageError, ConfigError) as error:
        return [*checks, Check("database + migrations", False, first_line(error))]
    model_detail = f"random CLIP (model.device {config.model.device}): {rows['ok']} frames got a label"
    checks.append(Check("model", rows["ok"] == GOOD_FRAMES, model_detail))
    checks.append(
        Check(
            "database + migrations",
            rows == {"ok": GOOD_FRAMES, "failed": 1},
            f"temporary SQLite migrated to head, {rows['ok']} ok and {rows['failed']} failed rows",
        )
    )
    checks.append(_moves_check(config))
    return checks


def _moves_check(config: Config) -> Check:
    processed = _frames_in(config.paths.processed)
    failed = _frames_in(config.paths.failed)
    left = _frames_in(config.paths.inbox)
    ok = len(processed) == GOOD_FRAMES and len(failed) == 1 and not left
    detail = f"{len(processed)} frames in processed/, {len(failed)} in failed/, {len(left)} left in the inbox"
    return Check("moves", ok, detail)


def _frames_in(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*.bmp") if path.is_file()] if folder.is_dir() else []


def database_probe(config: Config, *, access: Access) -> Check:
    """The configured database, opened read-only; nothing is made (a SQLite file, its folder). A
    SQLite file must be writable to `access`'s user, and so must its folder."""
    from watcher.store.opening import open_database

    name = "configured database"
    url = config.database_url
    try:
        file = sqlite_file(url)
    except ArgumentError as error:
        return Check(name, False, f"database.url: {first_line(error)}")
    if file is not None and not file.exists():
        writable = access.can_make(file.parent)
        makes = "`cctv-gender db upgrade` or `watch` makes it"
        detail = f"{file} does not exist yet; {makes} (its folder: writable{access.by})"
        return Check(
            name, writable, detail if writable else f"{file}: cannot be made{access.by} (no write access)"
        )
    if file is not None and not access.can_write(file):
        return Check(name, False, f"{file}: cannot be written{access.by} (the file or its folder)")
    try:
        engine = open_database(config, migrate=False, read_only=True)
        engine.dispose()
    except (StartupError, StorageError, ConfigError) as error:
        return Check(name, False, first_line(error))
    written = "" if file is None else f", writable{access.by}"
    return Check(name, True, f"{_hidden_password(url)} reachable, schema current{written}")


def inbox_probe(config: Config, *, access: Access) -> Check:
    """Can frames be claimed in the configured inbox by `access`'s user: one hidden file made and
    removed there."""
    inbox = config.paths.inbox
    return _folder_probe("configured inbox", inbox, access=access, made_once=_made_once(config), claim=True)


def folder_probes(config: Config, *, access: Access) -> list[Check]:
    """processed/ and failed/, where the daemon moves every frame it is done with, and the model
    registry, where it keeps its engine cache: may `access`'s user write them (or make them)?"""
    made_once = _made_once(config)
    registry = _folder_probe("configured registry", config.registry_dir, access=access, made_once=False)
    if not registry.ok:  # the daemon still runs, on torch fp32, exporting and measuring nothing
        registry = Check(registry.name, False, f"{registry.detail}; `watch` cannot keep its engine cache")
    return [
        _folder_probe("configured processed", config.paths.processed, access=access, made_once=made_once),
        _folder_probe("configured failed", config.paths.failed, access=access, made_once=made_once),
        registry,
    ]


def _made_once(config: Config) -> bool:
    """Whether `watch` made the inbox and output folders once: then it never makes them again."""
    return (config.paths.data / FOLDERS_MARK).exists()


def _folder_probe(name: str, folder: Path, *, access: Access, made_once: bool, claim: bool = False) -> Check:
    """A folder the daemon writes, as `access`'s user: the inbox by making and removing one hidden
    file (`claim`), any other by asking the kernel only, so that nothing appears in it."""
    if not folder.is_dir():
        if made_once:
            return Check(
                name, False, f"{folder} is missing (an unmounted share?); `watch` will not make it again"
            )
        writable = access.can_make(folder)
        detail = f"{folder} does not exist yet; `watch` makes it (its folder: writable{access.by})"
        return Check(
            name, writable, detail if writable else f"{folder} is missing and cannot be made{access.by}"
        )
    problem = access.claim(folder) if claim else access.denied(folder)
    if problem is not None:
        return Check(name, False, f"{folder}: not writable{access.by}: {problem}")
    return Check(name, True, f"{folder} writable{access.by}")


def _hidden_password(url: str) -> str:
    return shown_url(url)
