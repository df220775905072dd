"""`cctv-gender selftest`: the real pipeline on generated input, and probes that change nothing."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import mount_tmpfs, write_config
from watcher.commands.main import main
from watcher.commands.selftest import Check, database_probe, folder_probes, inbox_probe
from watcher.config import load_config
from watcher.errors import StartupError
from watcher.intake.folders import FOLDERS_MARK
from watcher.service.access import Unit, access_for, read_unit

CHECKS = (
    "decode",
    "model",
    "database + migrations",
    "moves",
    "configured database",
    "configured inbox",
    "configured processed",
    "configured failed",
    "configured registry",
)


def _account_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _table(out: str) -> dict[str, str]:
    rows = {}
    for line in out.splitlines():
        for check in CHECKS:
            if line.startswith(check + " "):
                rows[check] = line[len(check) :].split()[0]
    return rows


def _site(folder: Path) -> list[str]:
    # SQLite's -wal and -shm files come and go with connections: not the site's content.
    return sorted(
        str(path.relative_to(folder))
        for path in folder.rglob("*")
        if not path.name.endswith(("-wal", "-shm"))
    )


def test_a_healthy_install_passes_and_the_site_is_left_untouched(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config()

    assert main(["selftest", "--config", str(config)]) == 0

    out = capsys.readouterr().out
    assert _table(out) == dict.fromkeys(CHECKS, "ok"), out
    assert out.rstrip().endswith("selftest passed")
    # Not the configured inbox, processed/, failed/ or database: none of them was made.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.toml"]


def test_an_existing_site_is_probed_read_only(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config()
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    (tmp_path / "inbox").mkdir()
    before = _site(tmp_path)
    capsys.readouterr()

    assert main(["selftest", "--config", str(config)]) == 0

    out = capsys.readouterr().out
    assert "schema current" in out and f"{tmp_path / 'inbox'} writable" in out
    assert _site(tmp_path) == before


def test_an_unreachable_database_fails_the_selftest(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(database={"url": "postgresql+psycopg://nobody@127.0.0.1:9/nothing"})

    assert main(["selftest", "--config", str(config)]) == 1

    out = capsys.readouterr().out
    rows = _table(out)
    assert rows["configured database"] == "FAILED" and rows["moves"] == "ok", out
    assert out.rstrip().endswith("selftest failed: configured database")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.toml"]


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not _account_exists("nobody"), reason="checks as another user need root"
)


@pytest.fixture
def public_site() -> Iterator[Path]:
    """A site folder every user can reach (tmp_path's parents are root's alone), root's own."""
    site = Path(tempfile.mkdtemp(prefix="cctv-selftest-site-"))
    site.chmod(0o755)
    try:
        yield site
    finally:
        shutil.rmtree(site)


@needs_root
def test_run_as_root_the_folders_are_checked_as_the_service_user(
    make_config: Callable[..., Path], public_site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Root writes anything: checked as root, a site the service's user cannot write passed."""
    config_path = make_config(
        paths={name: str(public_site / name) for name in ("inbox", "processed", "failed", "data")}
    )
    assert main(["db", "upgrade", "--config", str(config_path)]) == 0
    (public_site / "inbox").mkdir(mode=0o755)  # root's: nobody else may write it

    assert main(["selftest", "--config", str(config_path), "--as-user", "nobody"]) == 1

    out = capsys.readouterr().out
    rows = _table(out)
    assert rows["configured inbox"] == rows["configured database"] == "FAILED", out
    assert f"{public_site / 'inbox'}: not writable by nobody: Permission denied" in out
    assert f"{public_site / 'data' / 'results.sqlite3'}: cannot be written by nobody" in out
    # Given to the service's user, the same site passes, and says whose access it checked.
    nobody = pwd.getpwnam("nobody")
    for path in (public_site, *public_site.rglob("*")):
        os.chown(path, nobody.pw_uid, nobody.pw_gid, follow_symlinks=False)
    config, access = load_config(config_path), access_for("nobody")
    assert inbox_probe(config, access=access) == Check(
        "configured inbox", True, f"{public_site / 'inbox'} writable by nobody"
    )
    database = database_probe(config, access=access)
    assert database.ok and database.detail.endswith("schema current, writable by nobody"), database


@needs_root
def test_processed_failed_and_the_registry_are_checked_as_the_service_user(
    make_config: Callable[..., Path], public_site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only the inbox and the database were probed: a processed/ the daemon could not write passed,
    and no frame could ever leave the inbox."""
    folders = {name: public_site / name for name in ("inbox", "processed", "failed", "data")}
    config_path = make_config(paths={name: str(folder) for name, folder in folders.items()})
    assert main(["db", "upgrade", "--config", str(config_path)]) == 0
    registry = folders["data"] / "models"
    for folder in (folders["inbox"], folders["processed"], folders["failed"], registry):
        folder.mkdir(mode=0o755)  # root's: nobody else may write it
    nobody = pwd.getpwnam("nobody")
    os.chown(folders["inbox"], nobody.pw_uid, nobody.pw_gid)
    os.chown(folders["data"] / "results.sqlite3", nobody.pw_uid, nobody.pw_gid)
    os.chown(folders["data"], nobody.pw_uid, nobody.pw_gid)
    before = _site(public_site)
    capsys.readouterr()

    assert main(["selftest", "--config", str(config_path), "--as-user", "nobody"]) == 1

    out = capsys.readouterr().out
    rows = _table(out)
    assert rows["configured inbox"] == rows["configured database"] == "ok", out
    assert (
        rows["configured processed"] == rows["configured failed"] == rows["configured registry"] == "FAILED"
    ), out
    assert f"{folders['processed']}: not writable by nobody: Permission denied" in out
    assert f"{folders['failed']}: not writable by nobody: Permission denied" in out
    assert (
        f"{registry}: not writable by nobody: Permission denied; `watch` cannot keep its engine cache" in out
    )
    assert out.rstrip().endswith(
        "selftest failed: configured processed, configured failed, configured registry"
    ), out
    # Given to the service's user, they pass; nothing was made in them, as asked or as root.
    for folder in (folders["processed"], folders["failed"], registry):
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
    checks = folder_probes(load_config(config_path), access=access_for("nobody"))
    assert [(check.ok, check.detail) for check in checks] == [
        (True, f"{folder} writable by nobody")
        for folder in (folders["processed"], folders["failed"], registry)
    ]
    assert _site(public_site) == before


def test_a_missing_output_folder_fails_once_watch_has_made_them(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    """After the first start `watch` never makes processed/ again (an unmounted share): selftest says so."""
    config = load_config(make_config())
    assert [check.ok for check in folder_probes(config, access=access_for(None))] == [True, True, True]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / FOLDERS_MARK).touch()
    (tmp_path / "failed").mkdir()
    (tmp_path / "data" / "models").mkdir()

    processed, failed, registry = folder_probes(config, access=access_for(None))

    assert not processed.ok and processed.detail.startswith(
        f"{tmp_path / 'processed'} is missing (an unmounted share?); `watch` will not make it again"
    ), processed
    assert failed.ok and registry.ok, (failed, registry)


def test_a_read_only_output_folder_says_so(make_config: Callable[..., Path], tmp_path: Path) -> None:
    """A share remounted read-only after an error: its mode bits still say writable, even to root."""
    processed = tmp_path / "processed"
    mount_tmpfs(processed, size="64k")
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(processed)], check=True)
        config = load_config(make_config())

        check = folder_probes(config, access=access_for(None, unit_dir=tmp_path))[0]

        assert not check.ok and check.detail.startswith(
            f"{processed}: not writable; as root: no {tmp_path / 'cctv-gender.service'}"
        ), check
        assert check.detail.endswith(": Read-only file system"), check
    finally:
        subprocess.run(["umount", "-l", str(processed)], check=False)


def test_a_unit_names_the_service_user_and_its_drop_in_outranks_it(tmp_path: Path) -> None:
    assert read_unit(unit_dir=tmp_path).user is None
    (tmp_path / "cctv-gender.service").write_text(
        "[Service]\nType=notify\nUser=cctv-gender\nGroup=cctv-gender\n"
    )
    assert read_unit(unit_dir=tmp_path).user == "cctv-gender"
    (tmp_path / "cctv-gender.service.d").mkdir()
    (tmp_path / "cctv-gender.service.d" / "user.conf").write_text("[Service]\nUser = nobody\n")
    assert read_unit(unit_dir=tmp_path).user == "nobody"


def test_a_units_groups_are_read_as_systemd_reads_them(tmp_path: Path) -> None:
    """The last Group= wins; each SupplementaryGroups= adds to the list, an empty one empties it."""
    (tmp_path / "cctv-gender.service").write_text(
        "[Service]\nUser=cctv-gender\nGroup=cctv-gender\nSupplementaryGroups=video render\n"
    )
    assert read_unit(unit_dir=tmp_path) == Unit("cctv-gender", "cctv-gender", ("video", "render"))
    drop_ins = tmp_path / "cctv-gender.service.d"
    drop_ins.mkdir()
    (drop_ins / "a-groups.conf").write_text(
        "[Service]\nGroup = 4242\nSupplementaryGroups=\nSupplementaryGroups=audio\n"
    )
    (drop_ins / "b-share.conf").write_text("[Service]\nSupplementaryGroups=nfs-frames  4343\n")

    assert read_unit(unit_dir=tmp_path) == Unit("cctv-gender", "4242", ("audio", "nfs-frames", "4343"))


def _groups_nobody_is_not_in(count: int) -> list[grp.struct_group]:
    nobody = pwd.getpwnam("nobody")
    groups = [
        group
        for group in grp.getgrall()
        if group.gr_gid not in (0, nobody.pw_gid) and "nobody" not in group.gr_mem
    ]
    if len(groups) < count:
        pytest.skip(f"needs {count} groups that nobody is not in")
    return groups[:count]


@needs_root
def test_the_probes_run_with_the_units_group_and_supplementary_groups(
    tmp_path: Path, public_site: Path
) -> None:
    """systemd gives the daemon the unit's Group= and SupplementaryGroups= (a drop-in may set
    them): the probe took the account's groups only, and a folder shared through them failed."""
    by_name, by_number = _groups_nobody_is_not_in(2)
    primary, supplementary = public_site / "primary", public_site / "supplementary"
    for folder, group in ((primary, by_name), (supplementary, by_number)):
        folder.mkdir()
        os.chown(folder, 0, group.gr_gid)
        folder.chmod(0o770)
    unit = tmp_path / "cctv-gender.service"
    unit.write_text("[Service]\nUser=nobody\n")
    access = access_for(None, unit_dir=tmp_path)
    assert access.denied(primary) == access.denied(supplementary) == "Permission denied"

    unit.write_text(
        f"[Service]\nUser=nobody\nGroup={by_name.gr_name}\nSupplementaryGroups={by_number.gr_gid}\n"
    )
    access = access_for(None, unit_dir=tmp_path)

    assert access.denied(primary) is None and access.denied(supplementary) is None
    assert access_for("nobody", unit_dir=tmp_path) == access  # --as-user: the unit still sets the groups
    (tmp_path / "cctv-gender.service.d").mkdir()
    (tmp_path / "cctv-gender.service.d" / "reset.conf").write_text("[Service]\nSupplementaryGroups=\n")
    access = access_for(None, unit_dir=tmp_path)
    assert access.denied(primary) is None and access.denied(supplementary) == "Permission denied"


@needs_root
def test_a_unit_naming_an_unknown_group_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "cctv-gender.service").write_text("[Service]\nUser=nobody\nGroup=no-such-group-here\n")

    with pytest.raises(
        StartupError, match=r"^\S+cctv-gender.service: Group= no-such-group-here: no such group"
    ):
        access_for(None, unit_dir=tmp_path)


@needs_root
def test_as_root_with_no_service_user_known_the_checks_say_they_are_roots(tmp_path: Path) -> None:
    access = access_for(None, unit_dir=tmp_path)  # no unit installed there
    (tmp_path / "inbox").mkdir()
    config = load_config(write_config(tmp_path / "config.toml", {}))

    check = inbox_probe(config, access=access)

    assert check.ok and "as root: no " in check.detail and "--as-user NAME" in check.detail, check
    (tmp_path / "cctv-gender.service").write_text("[Service]\nUser=nobody\n")
    assert access_for(None, unit_dir=tmp_path).by == " by nobody"


def test_an_unknown_user_is_one_line(
    make_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["selftest", "--config", str(make_config()), "--as-user", "no-such-user-here"]) == 1

    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "cctv-gender: error: --as-user no-such-user-here: no such user on this machine"
    ], err


def test_a_unit_with_a_comment_in_another_encoding_still_names_its_user(tmp_path: Path) -> None:
    """An admin's Latin-1 comment, which systemd does not mind, stopped selftest with a traceback."""
    (tmp_path / "cctv-gender.service").write_bytes(b"[Service]\n# G\xe9r\xe9 par l'admin\nUser=nobody\n")

    assert read_unit(unit_dir=tmp_path).user == "nobody"


@needs_root
def test_a_unit_may_name_its_user_by_uid(tmp_path: Path) -> None:
    """`User=65534` is as good as `User=nobody` to systemd: it was refused as no such user."""
    nobody = pwd.getpwnam("nobody")
    (tmp_path / "cctv-gender.service").write_text(f"[Service]\nUser={nobody.pw_uid}\n")

    assert access_for(None, unit_dir=tmp_path).by == " by nobody"
    assert access_for(str(nobody.pw_uid)).by == " by nobody"
