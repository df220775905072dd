"""systemd/install.sh and uninstall.sh run for real, as root, in a private mount namespace: /etc is
a copy and /opt, /srv, /var/lib, /var/log, /mnt are folders of tmp_path there, so the user, the
config, the folders and the drop-in they make land in tmp_path and nothing of this machine
changes. Only pip and the application are stand-ins (a preinstalled `.venv` whose `python` does
nothing and whose `cctv-gender` prints its arguments); systemd is absent (no daemon-reload).
Skipped where the namespace cannot be made (not root, no unshare)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DROPIN = "etc/systemd/system/cctv-gender.service.d/paths.conf"
CONFIG = "etc/cctv-gender/config.toml"

_SANDBOX = r"""
set -e
root=$1; shift
for folder in opt srv varlib varlog mnt; do mkdir -p "$root/$folder"; done
[ -d "$root/etc" ] || cp -a /etc "$root/etc"
mount --bind "$root/etc" /etc
mount --bind "$root/opt" /opt
mount --bind "$root/srv" /srv
mount --bind "$root/varlib" /var/lib
mount --bind "$root/varlog" /var/log
mount --bind "$root/mnt" /mnt
[ -d /run/systemd ] && mount -t tmpfs tmpfs /run/systemd
venv=/opt/cctv-gender/.venv/bin
if [ ! -e "$venv/python" ]; then
    mkdir -p "$venv"
    printf '#!/bin/sh\nexit 0\n' > "$venv/python"
    printf '#!/bin/sh\necho "cctv-gender $*"\n' > "$venv/cctv-gender"
    chmod 755 "$venv/python" "$venv/cctv-gender"
fi
cd "$REPO"
set +e
eval "$1"
"""


def _can_sandbox() -> bool:
    if os.geteuid() != 0 or any(shutil.which(tool) is None for tool in ("unshare", "useradd", "runuser")):
        return False
    probe = ["unshare", "-m", "--propagation", "private", "true"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


needs_sandbox = pytest.mark.skipif(not _can_sandbox(), reason="needs root and mount namespaces")


def sandboxed(root: Path, command: str) -> subprocess.CompletedProcess[str]:
    """`command` (bash, in the repository) inside the sandbox whose files live in `root`."""
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "bash", "-c", _SANDBOX, "sandbox", str(root), command],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "REPO": str(REPO), "PYTHON": sys.executable},
        check=False,
    )


def _installed(root: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    completed = sandboxed(root, "systemd/install.sh " + " ".join(flags))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed


@needs_sandbox
def test_a_rerun_reads_the_config_as_the_daemon_does(tmp_path: Path) -> None:
    _installed(tmp_path)
    dropin = (tmp_path / DROPIN).read_text()
    config = tmp_path / CONFIG
    # Saved by Windows' Notepad: a byte-order mark, which cctv-gender itself reads.
    config.write_bytes(b"\xef\xbb\xbf" + config.read_bytes())
    _installed(tmp_path)
    assert (tmp_path / DROPIN).read_text() == dropin


@needs_sandbox
@pytest.mark.parametrize(
    ("line", "message"),
    [
        pytest.param('inbox = "/srv/cctv gender/inbox"', "paths.inbox '/srv/cctv gender/inbox'", id="space"),
        pytest.param('failed = "/srv/100%failed"', "paths.failed '/srv/100%failed'", id="specifier"),
        pytest.param('inbox = "/srv/x', "cannot read its [paths] (Illegal character", id="not_toml"),
        pytest.param('data = ["/srv/x"]', "cannot read its [paths] (", id="not_a_path"),
        # Root's home here, the service user's in the daemon: refused by both, naming the key.
        pytest.param('inbox = "~/frames"', "paths.inbox '~/frames': starts with ~", id="home"),
        pytest.param(
            'inbox = "./~/frames"', "paths.inbox './~/frames': starts with ~", id="home_behind_a_dot"
        ),
    ],
)
def test_a_config_the_drop_in_cannot_follow_stops_a_rerun_with_one_line(
    tmp_path: Path, line: str, message: str
) -> None:
    _installed(tmp_path)
    dropin = (tmp_path / DROPIN).read_text()
    config = tmp_path / CONFIG
    key = line.split(" ", 1)[0]
    text = re.sub(rf"^{key} = .*$", lambda _match: line, config.read_text(), count=1, flags=re.MULTILINE)
    config.write_text(text)
    completed = sandboxed(tmp_path, "systemd/install.sh")
    assert completed.returncode == 1 and completed.stdout == "", completed.stdout + completed.stderr
    (only,) = completed.stderr.splitlines()
    assert only.startswith("install.sh: ") and message in only, only
    assert (tmp_path / DROPIN).read_text() == dropin


@needs_sandbox
def test_a_purge_after_an_uninstall_still_names_the_folders_it_leaves(tmp_path: Path) -> None:
    _installed(tmp_path, "--data", "/mnt/share/data", "--inbox", "/mnt/share/inbox")
    kept = sandboxed(tmp_path, "systemd/uninstall.sh")
    assert kept.returncode == 0, kept.stderr
    purged = sandboxed(tmp_path, "systemd/uninstall.sh --purge")
    assert purged.returncode == 0, purged.stderr
    for output in (kept.stdout, purged.stdout):
        assert "kept (named in paths.conf" in output and "/mnt/share/data /mnt/share/inbox" in output, output
    assert (tmp_path / "mnt" / "share" / "data").is_dir() and not (tmp_path / "etc" / "cctv-gender").exists()


@needs_sandbox
def test_an_uninstall_names_the_frame_folders_it_leaves_not_the_folder_the_service_was_given(
    tmp_path: Path,
) -> None:
    """The drop-in gives the service the frame folders' parent (one mount, so moves are links);
    what an uninstall tells the operator to remove by hand is still each folder, never the
    parent, which may hold more (a share's other data)."""
    folders = ["/mnt/cctv/inbox", "/mnt/cctv/processed", "/mnt/cctv/failed"]
    _installed(
        tmp_path,
        *[
            part
            for key, folder in zip(("inbox", "processed", "failed"), folders, strict=True)
            for part in (f"--{key}", folder)
        ],
    )
    assert "ReadWritePaths=/var/lib/cctv-gender /mnt/cctv\n" in (tmp_path / DROPIN).read_text()

    kept = sandboxed(tmp_path, "systemd/uninstall.sh")

    assert kept.returncode == 0, kept.stderr
    (line,) = [line for line in kept.stdout.splitlines() if line.startswith("kept (named in paths.conf")]
    assert line.split(": ", 1)[1].split() == folders


@needs_sandbox
def test_a_registry_and_a_database_outside_the_data_folder_are_made_writable_for_the_service(
    tmp_path: Path,
) -> None:
    """The config's own example (`registry = "/srv/cctv-gender/models"`) and a SQLite file in a
    folder of its own are written by the daemon: a rerun names their folders in the drop-in (the
    unit may write nothing else) and makes the missing ones the service user's."""
    _installed(tmp_path)
    config = tmp_path / CONFIG
    text = config.read_text().replace(
        '# registry = "/srv/cctv-gender/models"', 'registry = "/srv/cctv-gender/models"'
    )
    text = text.replace(
        '# url = "postgresql+psycopg://cctv@db.example/cctv"',
        'url = "sqlite:////mnt/results/cctv.sqlite3?timeout=5"',
    )
    config.write_text(text)

    _installed(tmp_path)

    dropin = (tmp_path / DROPIN).read_text()
    (writable,) = [line for line in dropin.splitlines() if line.startswith("ReadWritePaths=/")]
    assert writable.endswith(" /srv/cctv-gender/models /mnt/results"), writable
    assert "RequiresMountsFor=" in dropin and dropin.count("/mnt/results") == 2
    for made in (tmp_path / "srv" / "cctv-gender" / "models", tmp_path / "mnt" / "results"):
        assert made.is_dir() and made.stat().st_uid != 0, made
    # Inside the data folder: already writable, never named twice.
    config.write_text(
        text.replace('registry = "/srv/cctv-gender/models"', 'registry = "/var/lib/cctv-gender/models"')
    )
    _installed(tmp_path)
    (writable,) = [
        line for line in (tmp_path / DROPIN).read_text().splitlines() if line.startswith("ReadWritePaths=/")
    ]
    assert writable == "ReadWritePaths=/var/lib/cctv-gender /srv/cctv-gender /mnt/results", writable
