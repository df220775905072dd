"""May the daemon's user write a folder? Asked of the kernel as that user, not of the caller.

`selftest` is run by an admin, often as root, and root passes every permission check: a folder
the service's user cannot write looked fine. So, run as root, the checks run in a child with the
uid, gid and groups systemd gives the daemon, and the kernel answers: mode bits, ACLs, a share's
own squashing. The user is the installed unit's `User=` (or `selftest --as-user NAME`); with
neither, root checks as itself and says so. The gid is the unit's `Group=`, else the user's own;
the groups, the user's in the group database plus the unit's `SupplementaryGroups=`.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from watcher.errors import StartupError

logger = logging.getLogger(__name__)

UNIT = "cctv-gender.service"
UNIT_DIR = Path("/etc/systemd/system")  # where install.sh puts the unit and its drop-ins
PROBE_TIMEOUT_S = 30  # a hung share answers nothing: that is a finding, not a wait

# $1 what, $2 the path. claim: make and remove a hidden file in the folder; folder: the user may
# make files in the folder (write and search permission), nothing made; make: the nearest folder
# that exists above the path lets the user make it; write: the file and its folder (SQLite makes
# its -wal, -shm and journal beside it) may be written.
_PROBE = r"""
what=$1 path=$2
case $what in
claim) made=$(mktemp -p "$path" .selftest-XXXXXXXX) && rm -f -- "$made" ;;
folder) [ -w "$path" ] && [ -x "$path" ] || { echo "$path: Permission denied" >&2; exit 1; } ;;
make)
    while [ ! -e "$path" ] && [ "$path" != / ]; do path=$(dirname -- "$path"); done
    [ -d "$path" ] && [ -w "$path" ] && [ -x "$path" ] ;;
write)
    folder=$(dirname -- "$path")
    [ -r "$path" ] && [ -w "$path" ] && [ -w "$folder" ] && [ -x "$folder" ] ;;
esac
"""


@dataclass(frozen=True)
class Unit:
    """Whom the installed unit runs the daemon as: what its `User=`, `Group=` and
    `SupplementaryGroups=` say, a drop-in's outranking the unit's."""

    user: str | None = None
    group: str | None = None
    supplementary: tuple[str, ...] = ()


@dataclass(frozen=True)
class Identity:
    """The credentials a check runs with: the service's user, its gid and its groups."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


@dataclass(frozen=True)
class Access:
    """Whose access the checks report: `account` None is this process's own; `note` says why a
    check of root's own access is not the service's."""

    account: Identity | None = None
    note: str = ""

    @property
    def by(self) -> str:
        """For a check's detail, after "writable": ` by NAME` when checked as another user, else
        the note, if any."""
        if self.account is not None:
            return f" by {self.account.name}"
        return f"; {self.note}" if self.note else ""

    def claim(self, folder: Path) -> str | None:
        """None when a file can be made and removed in `folder`, else why not."""
        if self.account is None:
            try:
                with tempfile.NamedTemporaryFile(dir=folder, prefix=".selftest-"):
                    return None
            except OSError as error:
                return str(error.strerror or error)
        return self._as_account("claim", folder)

    def denied(self, folder: Path) -> str | None:
        """None when the user may make files in `folder` (write and search permission), else why
        not. Only asked: nothing is made there."""
        if self.account is None:
            problem = None if os.access(folder, os.W_OK | os.X_OK) else "Permission denied"
        else:
            problem = self._as_account("folder", folder)
        # access(2) says no to writing on a read-only mount too, whatever the mode bits say.
        if problem == "Permission denied" and _read_only(folder):
            return "Read-only file system"
        return problem

    def can_make(self, path: Path) -> bool:
        """Whether the nearest folder that exists above `path` lets the user make it."""
        if self.account is None:
            for folder in (path, *path.parents):
                if folder.exists():
                    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)
            return False
        return self._as_account("make", path) is None

    def can_write(self, file: Path) -> bool:
        """Whether the user may write `file` and make files beside it."""
        if self.account is None:
            folder = os.access(file.parent, os.W_OK | os.X_OK)
            return folder and os.access(file, os.R_OK | os.W_OK)
        return self._as_account("write", file) is None

    def _as_account(self, what: str, path: Path) -> str | None:
        account = self.account
        assert account is not None
        try:
            completed = subprocess.run(
                ["/bin/sh", "-c", _PROBE, "selftest-probe", what, str(path)],
                user=account.uid,
                group=account.gid,
                extra_groups=list(account.groups),
                cwd="/",
                env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
                capture_output=True,
                text=True,
                timeout=PROBE_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"no answer in {PROBE_TIMEOUT_S} s (a hung share?)"
        except OSError as error:  # no /bin/sh, or not allowed to switch user
            return f"cannot check as {account.name}: {error.strerror or error}"
        if completed.returncode == 0:
            return None
        # mktemp's own words end with the reason: "...: Permission denied".
        said = completed.stderr.strip().splitlines()
        return said[-1].rpartition(": ")[2] if said else "not allowed"


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def read_unit(*, unit_dir: Path = UNIT_DIR) -> Unit:
    """Whom the installed unit (and its drop-ins, in name order, after it) runs the daemon as."""
    user = group = None
    supplementary: list[str] = []
    for file in [unit_dir / UNIT, *sorted((unit_dir / f"{UNIT}.d").glob("*.conf"))]:
        try:
            # systemd reads a comment in another encoding (an admin's Latin-1 note) without a word.
            text = file.read_bytes().decode("utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            key, equals, value = (part.strip() for part in line.partition("="))
            if not equals:
                continue
            if key == "User":
                user = value or None
            elif key == "Group":
                group = value or None
            elif key == "SupplementaryGroups":
                # Each assignment adds to the list; an empty one empties it (systemd.exec(5)).
                supplementary = [*supplementary, *value.split()] if value else []
    return Unit(user=user, group=group, supplementary=tuple(supplementary))


def access_for(as_user: str | None, *, unit_dir: Path = UNIT_DIR) -> Access:
    """Whose access to check: run as root, the service's user (`as_user`, else the unit's);
    otherwise this process's own, which `as_user` may only name."""
    root = os.geteuid() == 0
    unit = read_unit(unit_dir=unit_dir) if root else Unit()
    name = as_user or unit.user
    if name is None:
        if not root:
            return Access()
        note = f"as root: no {unit_dir / UNIT} names the service's user; --as-user NAME checks as it"
        return Access(note=note)
    try:
        # systemd takes a numeric uid for User= as well as a name (systemd.exec(5)).
        account = pwd.getpwuid(int(name)) if name.isascii() and name.isdigit() else pwd.getpwnam(name)
    except (KeyError, OverflowError):
        where = "--as-user" if as_user else f"{unit_dir / UNIT}: User="
        raise StartupError(f"{where} {name}: no such user on this machine") from None
    if not root:
        if account.pw_uid != os.geteuid():
            raise StartupError(f"--as-user {name}: only root can check as another user")
        return Access()
    where = f"{unit_dir / UNIT}:"
    gid = account.pw_gid if unit.group is None else _group_id(unit.group, where=f"{where} Group=")
    # As systemd does: the user's groups in the group database, then SupplementaryGroups= added.
    groups = os.getgrouplist(account.pw_name, gid)
    groups += [_group_id(each, where=f"{where} SupplementaryGroups=") for each in unit.supplementary]
    logger.debug(
        "checking the site's folders as %s (uid %d, gid %d, groups %s)", name, account.pw_uid, gid, groups
    )
    return Access(account=Identity(account.pw_name, account.pw_uid, gid, tuple(dict.fromkeys(groups))))


def _group_id(group: str, *, where: str) -> int:
    """A group's gid: systemd takes a number as well as a name (systemd.exec(5))."""
    if group.isascii() and group.isdigit() and int(group) < 2**32 - 1:  # (gid_t)-1 is no group
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise StartupError(f"{where} {group}: no such group on this machine") from None
