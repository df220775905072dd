"""The Hugging Face libraries' lines at a daemon's start: each once, in our format, whether or not
$CI is set (transformers propagates to ours only then), and without the loss-type warning that
tracing CLIP's tower provoked at every start (model.library_logs)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from model.library_logs import single_library_logs
from tests.helpers import run_watch_once


@pytest.mark.parametrize("ci", [None, "true"])
def test_a_start_prints_no_library_line_of_its_own_format_and_no_loss_warning(
    make_config: Callable[..., Path], ci: str | None
) -> None:
    environment = {name: value for name, value in os.environ.items() if name != "CI"}
    if ci is not None:
        environment["CI"] = ci
    done = run_watch_once(make_config(), env=environment)

    assert done.returncode == 0, done.stderr
    assert "traced" in done.stderr  # the tower was traced: what provoked the warning
    assert "loss_type" not in done.stderr
    assert "[transformers]" not in done.stderr
    assert "WARNING" not in done.stderr


def test_a_transformers_warning_reaches_our_handler_once(capfd: pytest.CaptureFixture[str]) -> None:
    from transformers.utils import logging as hf_logging

    single_library_logs()
    ours = logging.StreamHandler(sys.stderr)
    ours.setFormatter(logging.Formatter("ours %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(ours)
    try:
        hf_logging.get_logger("transformers.models.clip").warning("a CLIP warning")
        hf_logging.get_logger("transformers.modeling_utils").warning("`loss_type=None` was set")
    finally:
        root.removeHandler(ours)

    printed = capfd.readouterr().err
    assert printed.count("a CLIP warning") == 1
    assert "ours WARNING transformers.models.clip: a CLIP warning" in printed
    assert "loss_type" not in printed
