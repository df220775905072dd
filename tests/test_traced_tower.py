"""CLIP's image tower as a TorchScript trace (model.traced_tower): the same features as the tower
run op by op from Python, for every batch size, and Python's path wherever the trace may not run.

The CLIP is the tests' random-weight checkpoint (the pretrained weights cannot be downloaded
here), loaded through `from_pretrained` as the real one is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.models.clip.modeling_clip import CLIPVisionModel

from model.clip_features import ClipFeatureExtractor
from model.runtime import Runtime
from model.synthetic import write_bmp
from tests.helpers import RunningDaemon, query, wait_for

CPU = torch.device("cpu")
# The same kernels run on both paths: what differs is float32 rounding at most.
FEATURE_TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def eager(tiny_clip: Path) -> ClipFeatureExtractor:
    return ClipFeatureExtractor(str(tiny_clip), runtime=Runtime(device=CPU, precision="fp32"))


@pytest.fixture(scope="module")
def traced(tiny_clip: Path) -> ClipFeatureExtractor:
    extractor = ClipFeatureExtractor(str(tiny_clip), runtime=Runtime(device=CPU, precision="fp32"))
    extractor.warm_up(4)
    return extractor


@contextmanager
def python_passes(extractor: ClipFeatureExtractor) -> Iterator[list[int]]:
    """Counts the image tower's passes run op by op from Python (a trace calls no module's forward)."""
    calls: list[int] = []
    handle = extractor.model.vision_model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


def _pixels(count: int, seed: int, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, 224, 224, generator=generator).to(dtype)


@settings(max_examples=12, deadline=None)
@given(count=st.integers(min_value=1, max_value=40), seed=st.integers(min_value=0, max_value=2**31))
def test_the_trace_gives_the_towers_features_for_any_batch_size(
    eager: ClipFeatureExtractor, traced: ClipFeatureExtractor, count: int, seed: int
) -> None:
    # Traced on two frames: the batch's size is read from the input, never recorded as a constant.
    pixels = _pixels(count, seed)
    with python_passes(traced) as passes:
        got = traced.embed_pixels(pixels)
    assert not passes, "the traced extractor ran the tower op by op"
    expected = eager.embed_pixels(pixels)
    assert got.shape == expected.shape == (count, eager.feature_size)
    np.testing.assert_allclose(got, expected, rtol=0, atol=FEATURE_TOLERANCE)


def test_pictures_through_the_traced_tower_match_python_s_path(
    eager: ClipFeatureExtractor, traced: ClipFeatureExtractor
) -> None:
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(5)]
    frames.append(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))  # another size, same crop
    np.testing.assert_allclose(
        traced.image_features(frames), eager.image_features(frames), rtol=0, atol=FEATURE_TOLERANCE
    )


def test_pixels_the_trace_was_not_made_for_take_python_s_path(
    eager: ClipFeatureExtractor, traced: ClipFeatureExtractor
) -> None:
    pixels = _pixels(3, seed=9, dtype=torch.float64)  # traced for float32
    with python_passes(traced) as passes:
        got = traced.embed_pixels(pixels)
    assert passes == [1]
    np.testing.assert_allclose(got, eager.embed_pixels(pixels), rtol=0, atol=FEATURE_TOLERANCE)


def test_an_autocast_runtime_is_not_traced(eager: ClipFeatureExtractor) -> None:
    # bf16 autocast casts below the tracer: a trace would record fp32 operations.
    bf16 = eager.variant(Runtime(device=CPU, precision="bf16"))
    assert bf16.trace() is False
    with python_passes(bf16) as passes:
        features = bf16.embed_pixels(_pixels(2, seed=1))
    assert passes == [1] and features.shape == (2, bf16.feature_size)


def test_warm_up_without_tracing_leaves_python_s_path(tiny_clip: Path) -> None:
    extractor = ClipFeatureExtractor(str(tiny_clip), runtime=Runtime(device=CPU, precision="fp32"))
    extractor.warm_up(2, traced=False)
    with python_passes(extractor) as passes:
        extractor.embed_pixels(_pixels(2, seed=2))
    assert passes == [1]


def test_a_tower_that_cannot_be_traced_runs_from_python_with_a_warning(
    tiny_clip: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Faked: no CLIP that transformers loads fails to trace; torch.jit.trace is made to fail instead.
    def refuse(*_: object, **__: object) -> None:
        raise RuntimeError("Tracer cannot infer type of output\nmore lines of the tracer's message")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    extractor = ClipFeatureExtractor(str(tiny_clip), runtime=Runtime(device=CPU, precision="fp32"))
    with caplog.at_level(logging.WARNING, logger="model.traced_tower"):
        assert extractor.trace() is False
    assert [record.getMessage() for record in caplog.records] == [
        "CLIP's image tower runs op by op from Python: it could not be traced "
        "(Tracer cannot infer type of output)"
    ]
    with python_passes(extractor) as passes:
        extractor.embed_pixels(_pixels(2, seed=4))
    assert passes == [1]


@pytest.mark.parametrize("traced", [True, False], ids=["traced", "config_off"])
def test_the_daemon_classifies_through_the_trace_unless_the_config_says_not(
    traced: bool,
    start_daemon: Callable[..., RunningDaemon],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    forward = CLIPVisionModel.forward
    passes: list[int] = []

    def counted(self: CLIPVisionModel, *args: Any, **kwargs: Any) -> Any:
        passes.append(1)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(CLIPVisionModel, "forward", counted)
    with caplog.at_level(logging.INFO, logger="model.traced_tower"):
        start_daemon(model={"traced": traced}).turns_from_now(1)
    announced = [record for record in caplog.records if "TorchScript trace" in record.getMessage()]
    assert len(announced) == int(traced)
    passes.clear()  # the start-up's own passes: the trace, its check, the warm-up
    for index in range(5):
        write_bmp(tmp_path / "inbox" / "cam-01" / f"{index}.bmp", seed=index)
    database = tmp_path / "data" / "results.sqlite3"
    wait_for(lambda: query(database, "SELECT count(*) FROM results") == [(5,)], what="5 rows")
    assert query(database, "SELECT count(*) FROM results WHERE error IS NULL") == [(5,)]
    assert bool(passes) is not traced
