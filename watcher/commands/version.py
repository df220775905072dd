"""`cctv-gender --version`: this package's version; with `-v`, also Python's and the versions of the
libraries that do the work, read from their installed metadata (nothing heavy is imported)."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

PACKAGE = "cctv-gender"
LIBRARIES = ("torch", "transformers", "keras")


def version_text(*, verbose: bool) -> str:
    lines = [f"{PACKAGE} {installed_version(PACKAGE)}"]
    if verbose:
        lines.append(f"python {platform.python_version()}")
        lines += [f"{name} {installed_version(name)}" for name in LIBRARIES]
    return "\n".join(lines) + "\n"


def installed_version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "(not installed)"
