"""The size limits of watcher/ and model/ (issue 17): small modules, short functions.

Checked here rather than left to review, so that the habit survives the next person in a hurry.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60


# What code outside the store may take from SQLAlchemy: an engine to hand on, and the parsing of
# a URL (a config's `database.url`). No sessions, statements or driver errors.
_HANDLES = {"Engine", "URL", "make_url", "ArgumentError", "NoSuchModuleError"}


def _modules() -> list[Path]:
    return sorted(path for package in ("watcher", "model") for path in (REPO / package).rglob("*.py"))


def test_no_module_is_over_300_lines() -> None:
    too_long = {
        str(path.relative_to(REPO)): lines
        for path in _modules()
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"


def test_no_function_is_over_60_lines() -> None:
    too_long: dict[str, int] = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long[f"{path.relative_to(REPO)}:{node.lineno} {node.name}"] = lines
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: {too_long}"


def test_no_module_opens_a_session_outside_the_store() -> None:
    # The store boundary: every statement and session lives in watcher/store/; elsewhere an
    # Engine is only a handle passed on to it.
    offenders = []
    for path in _modules():
        if path.is_relative_to(REPO / "watcher" / "store"):
            continue
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import) and any(a.name.startswith("sqlalchemy") for a in node.names):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} import sqlalchemy")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
                names = {alias.name for alias in node.names} - _HANDLES
                if names:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {sorted(names)}")
        if re.search(r"engine\.(begin|connect)\(", text):
            offenders.append(f"{path.relative_to(REPO)}: engine.begin()/connect()")
    assert not offenders, offenders


def test_every_logger_is_used() -> None:
    unused = [
        str(path.relative_to(REPO))
        for path in _modules()
        if "logger = logging.getLogger(__name__)" in (text := path.read_text()) and "logger." not in text
    ]
    assert not unused, f"loggers never used: {unused}"
