"""systemd/install.sh without installing anything: the drop-in and config it renders
(`--print-config`), the Python check that comes first, its command line (issue 19)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from watcher.config import load_config

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "systemd" / "install.sh"
UNIT = REPO / "systemd" / "cctv-gender.service"
DROPIN = "/etc/systemd/system/cctv-gender.service.d/paths.conf"
NFS = ["--inbox", "/mnt/cctv/inbox", "--processed", "/mnt/cctv/processed", "--failed", "/mnt/cctv/failed"]

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="needs systemd-analyze"
)


def _install(*args: str, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALL), "--python", python, *args], capture_output=True, text=True, timeout=60
    )


def _printed(*args: str) -> dict[str, str]:
    """`--print-config`'s documents by the path they are written to."""
    completed = _install("--print-config", *args)
    assert completed.returncode == 0, completed.stderr
    parts = re.split(r"^==> (\S+) <==\n", completed.stdout, flags=re.MULTILINE)
    assert parts[0] == ""
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _setting(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(key + "=")]


def test_the_install_scripts_parse() -> None:
    for script in ("install.sh", "uninstall.sh"):
        assert subprocess.run(["bash", "-n", str(REPO / "systemd" / script)], check=False).returncode == 0


def test_the_default_config_and_drop_in(tmp_path: Path) -> None:
    printed = _printed()
    assert set(printed) == {DROPIN, "/etc/cctv-gender/config.toml"}
    config_path = tmp_path / "config.toml"
    config_path.write_text(printed["/etc/cctv-gender/config.toml"])
    config = load_config(config_path)
    assert config.paths.inbox == Path("/srv/cctv-gender/inbox")
    assert config.paths.processed == Path("/srv/cctv-gender/processed")
    assert config.paths.failed == Path("/srv/cctv-gender/failed")
    assert config.paths.data == Path("/var/lib/cctv-gender")
    folders = "/var/lib/cctv-gender /srv/cctv-gender/inbox /srv/cctv-gender/processed /srv/cctv-gender/failed"
    assert _setting(printed[DROPIN], "RequiresMountsFor") == [folders]
    # The inbox, processed/ and failed/ by their folder: one mount in the service (see below).
    assert _setting(printed[DROPIN], "ReadWritePaths") == ["", "/var/lib/cctv-gender /srv/cctv-gender"]
    # The unit alone (no drop-in yet) allows the same folders.
    unit = UNIT.read_text()
    assert "ReadWritePaths=/srv/cctv-gender\n" in unit and "StateDirectory=cctv-gender\n" in unit


def test_folders_on_a_share_go_into_the_drop_in_and_the_config(tmp_path: Path) -> None:
    printed = _printed("--data", "/data/cctv-gender/", *NFS)
    dropin = printed[DROPIN]
    folders = "/data/cctv-gender /mnt/cctv/inbox /mnt/cctv/processed /mnt/cctv/failed"
    # The empty assignment drops the unit's /srv/cctv-gender: only the config's folders are writable.
    assert _setting(dropin, "ReadWritePaths") == ["", "/data/cctv-gender /mnt/cctv"]
    assert _setting(dropin, "RequiresMountsFor") == [folders]
    assert dropin.index("[Unit]") < dropin.index("RequiresMountsFor=") < dropin.index("[Service]")
    assert dropin.index("[Service]") < dropin.index("ReadWritePaths=")
    config_path = tmp_path / "config.toml"
    config_path.write_text(printed["/etc/cctv-gender/config.toml"])
    config = load_config(config_path)
    assert config.paths.data == Path("/data/cctv-gender")
    assert config.paths.inbox == Path("/mnt/cctv/inbox")
    assert config.paths.processed == Path("/mnt/cctv/processed")
    assert config.paths.failed == Path("/mnt/cctv/failed")


@pytest.mark.parametrize(
    "folders",
    [
        pytest.param(["/mnt/a/inbox", "/srv/processed", "/srv/failed"], id="only_the_root_in_common"),
        pytest.param(["/srv/inbox", "/srv/processed", "/srv/failed"], id="a_top_level_folder"),
        pytest.param(["/var/lib/inbox", "/var/lib/processed", "/var/lib/failed"], id="a_system_folder"),
        pytest.param(["/var/www/inbox", "/var/www/processed", "/var/www/failed"], id="right_under_var"),
        # Their common folder is wider than their own parent: /srv/a would give the service more.
        pytest.param(["/srv/a/b/inbox", "/srv/a/b/processed", "/srv/a/c/failed"], id="not_side_by_side"),
    ],
)
def test_frame_folders_without_a_folder_of_their_own_are_named_apart_and_said_to_copy(
    folders: list[str],
) -> None:
    inbox, processed, failed = folders
    dropin = _printed("--inbox", inbox, "--processed", processed, "--failed", failed)[DROPIN]
    assert _setting(dropin, "ReadWritePaths") == ["", f"/var/lib/cctv-gender {inbox} {processed} {failed}"]
    assert "each frame is copied into processed/ or failed/ instead of linked" in dropin


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")
def test_in_the_service_s_mounts_a_frame_s_move_into_processed_is_a_link(tmp_path: Path) -> None:
    """What systemd does with the drop-in (namespace.c: each ReadWritePaths= folder that is not a
    mount point yet is bound onto itself), imitated in a private mount namespace: the kernel
    links and renames within one mount only, so named apart each move failed with EXDEV."""
    site = tmp_path / "srv" / "cctv-gender"
    args = [f"--{name}" for name in ("inbox", "processed", "failed")]
    folders = [str(site / name) for name in ("inbox", "processed", "failed")]
    dropin = _printed(*[part for pair in zip(args, folders, strict=True) for part in pair])[DROPIN]
    writable = _setting(dropin, "ReadWritePaths")[1].split()[1:]  # the data folder is not ours here
    for folder in folders:
        Path(folder).mkdir(parents=True)
    (site / "inbox" / "x.bmp").write_bytes(b"frame")
    binds = "; ".join(f"mount --bind {folder} {folder}" for folder in writable)
    script = f"{binds}; ln {site}/inbox/x.bmp {site}/processed/x.bmp"
    linked = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-ec", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "Operation not permitted" in linked.stderr and "mount" in linked.stderr:
        pytest.skip("needs root to make a mount namespace")
    assert linked.returncode == 0, linked.stderr
    assert (site / "processed" / "x.bmp").read_bytes() == b"frame"


@needs_systemd_analyze
def test_the_unit_with_the_drop_in_verifies_and_stays_hardened(tmp_path: Path) -> None:
    # A drop-in's lines are read after the unit's, section by section: appending it is the same.
    dropin = _printed("--data", "/data/cctv-gender", *NFS)[DROPIN]
    unit = tmp_path / UNIT.name
    shipped = UNIT.read_text().replace("/opt/cctv-gender/.venv/bin/cctv-gender", sys.executable)
    unit.write_text(shipped + "\n" + dropin)
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert verified.returncode == 0 and verified.stderr.strip() == "", verified.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert match and float(match.group(1)) <= 3.0, security.stdout + security.stderr


def _fake_python(tmp_path: Path, says: str) -> Path:
    fake = tmp_path / "bin" / "python3"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\necho {says}\n")
    fake.chmod(0o755)
    return fake


def test_an_old_python_stops_it_first_with_one_line(tmp_path: Path) -> None:
    fake = _fake_python(tmp_path, "3.10")
    completed = _install("--print-config", python=str(fake))
    assert completed.returncode == 1 and completed.stdout == ""
    (line,) = completed.stderr.splitlines()
    assert line.startswith(f"install.sh: cctv-gender needs Python 3.11 or newer; {fake} is 3.10.")
    assert "--python" in line


def test_a_missing_python_is_named(tmp_path: Path) -> None:
    completed = _install("--print-config", python=str(tmp_path / "nowhere" / "python3"))
    assert completed.returncode == 1 and completed.stdout == ""
    (line,) = completed.stderr.splitlines()
    assert "nowhere/python3" in line and "3.11" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--inbox", "inbox"], "--inbox needs an absolute path", id="relative"),
        pytest.param(["--data", "/srv/my data"], "no spaces", id="space"),
        pytest.param(["--failed", "/srv/100%"], "no spaces", id="systemd_specifier"),
        pytest.param(["--processed"], "--processed needs a folder", id="no_value"),
        pytest.param(["--frames", "/srv"], "unknown option '--frames'", id="unknown"),
        pytest.param(["--inbox", "/"], "the service may not write there", id="root"),
        pytest.param(["--data", "/home/ops/data"], "the service may not write there", id="home"),
        pytest.param(["--inbox", "/srv/a", "--processed", "/srv/a/p"], "none inside another", id="nested"),
        pytest.param(["--inbox", "/srv/a", "--failed", "/srv/a/"], "none inside another", id="same"),
    ],
)
def test_a_bad_command_line_is_exit_2(args: list[str], message: str) -> None:
    completed = _install("--print-config", *args)
    assert completed.returncode == 2 and completed.stdout == ""
    assert message in completed.stderr.splitlines()[0]
