"""What a named PostgreSQL service sets (its pg_service.conf entry), found as libpq finds it.

libpq fills a connection's parameters from the entry only where the connection gives none, so the
daemon must know which they are to leave them alone (watcher.store.engine). psycopg 3 also waits
for a connection by a timeout of its own that it reads from the connection and PGCONNECT_TIMEOUT
only, never from the service: the entry's `connect_timeout` has to be handed to it.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping
from pathlib import Path

# Where Debian's libpq looks for the system-wide file when PGSYSCONFDIR is not set.
SYSTEM_CONFIG_FOLDER = Path("/etc/postgresql-common")


def service_settings(
    name: str, *, service_file: str | None, environment: Mapping[str, str]
) -> dict[str, str]:
    """The entry `name` of the first file that has one, libpq's order: the URL's `servicefile`,
    else PGSERVICEFILE, else ~/.pg_service.conf (~ being the environment's HOME); then the system's
    pg_service.conf (in PGSYSCONFDIR). Empty when no file has it (libpq then refuses the
    connection itself)."""
    for path in _service_files(service_file, environment):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue  # absent or unreadable: libpq goes on to the next as well
        entry = _entry(text, name)
        if entry is not None:
            return entry
    return {}


def _service_files(service_file: str | None, environment: Mapping[str, str]) -> list[Path]:
    system = Path(environment.get("PGSYSCONFDIR") or SYSTEM_CONFIG_FOLDER) / "pg_service.conf"
    user = service_file or environment.get("PGSERVICEFILE")
    if user:
        return [Path(user), system]
    home = _home(environment)
    return [system] if home is None else [home / ".pg_service.conf", system]


def _home(environment: Mapping[str, str]) -> Path | None:
    """Home as libpq (15 and later) finds it: the given environment's HOME, else the passwd entry (not
    this process's HOME, which Path.home() would read); None when neither says."""
    home = environment.get("HOME")
    if home:
        return Path(home)
    try:
        return Path(pwd.getpwuid(os.geteuid()).pw_dir)
    except KeyError:
        return None


def _entry(text: str, name: str) -> dict[str, str] | None:
    """The `[name]` section's key=value lines (comments and blank lines skipped), or None."""
    entry: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            if entry is not None:
                return entry  # the section after ours
            entry = {} if line.startswith(f"[{name}]") else None  # as libpq: what follows "]" ignored
        elif entry is not None and "=" in line:
            key, _, value = line.partition("=")
            entry.setdefault(key.strip(), value.strip())  # given twice: libpq keeps the first
    return entry
