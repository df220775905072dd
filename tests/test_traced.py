"""The model stage as TorchScript traces (model.traced): CLIP's image tower, and the preprocessing
of arena frames of one shape, give what they give run op by op from Python, for every batch size,
and Python's path runs wherever a trace may not.

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
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from transformers.models.clip.modeling_clip import CLIPVisionModel

import model.processor_steps
from model.clip_features import ClipFeatureExtractor
from model.images import plain_bmp_block
from model.packed import PackedBmp
from model.runtime import Runtime
from model.synthetic import write_bmp
from model.traced import TracedByShape, trace_checked
from tests.helpers import RunningDaemon, files_under, query, wait_for
from tests.test_fast_path import _bmp

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


def _in_an_arena(files: list[bytes]) -> list[PackedBmp]:
    """BMP files one after another in one buffer, as a file worker reads its share of an arena."""
    buffer = torch.zeros(sum(len(data) + 64 for data in files), dtype=torch.uint8)
    packed, cursor = [], 0
    for data in files:
        buffer[cursor : cursor + len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        block = plain_bmp_block(bytes(data), max_pixels=10**8)
        assert block is not None
        packed.append(PackedBmp(buffer, block.moved(cursor)))
        cursor += len(data) + 64
    return packed


@contextmanager
def steps_run_from_python(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the preprocessing steps run op by op from Python (a trace calls no Python)."""
    calls: list[int] = []
    transform = model.processor_steps.transform

    def counted(*args: Any) -> torch.Tensor:
        calls.append(1)
        return transform(*args)

    with monkeypatch.context() as patch:
        patch.setattr(model.processor_steps, "transform", counted)
        yield calls


# monkeypatch is used through its context(), undone within each example.
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    counts=st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=3),
    width=st.integers(min_value=1, max_value=300),
    height=st.integers(min_value=1, max_value=300),
    top_down=st.booleans(),
)
# Traced on one frame and run on two, this once recorded a batch of one as a constant.
@example(counts=[1, 2], width=1, height=2, top_down=False)
def test_arena_frames_preprocessed_through_their_shape_s_trace_match_python_s_path(
    tiny_clip: Path,
    eager: ClipFeatureExtractor,
    monkeypatch: pytest.MonkeyPatch,
    counts: list[int],
    width: int,
    height: int,
    top_down: bool,
) -> None:
    assume(max(width, height) <= 20 * min(width, height))  # wider is refused before reading (images.py)
    traced = ClipFeatureExtractor(str(tiny_clip), runtime=Runtime(device=CPU, precision="fp32"))
    assert traced.trace()
    # Batches of several sizes of one frame shape: the first is traced on, the rest reuse its trace.
    for number, count in enumerate(counts):
        files = [
            bytes(_bmp(width, height, seed=number * 10 + seed, top_down=top_down)) for seed in range(count)
        ]
        packed = _in_an_arena(files)
        with steps_run_from_python(monkeypatch) as calls:
            pixels = traced.preprocess(packed)
        # The first batch of the shape: run once to check the trace against, once as it is traced.
        assert len(calls) == (2 if number == 0 else 0)
        expected = eager.preprocess(packed)
        assert pixels.shape == expected.shape == (count, 3, 224, 224)
        torch.testing.assert_close(pixels, expected, rtol=0, atol=1e-5)


def test_frames_of_more_shapes_than_the_limit_run_from_python() -> None:
    traces = TracedByShape(limit=1)
    passes: list[int] = []

    def doubled(batch: torch.Tensor) -> torch.Tensor:
        passes.append(1)
        return batch * 2

    first, second = torch.ones(3, 4), torch.ones(2, 5)
    torch.testing.assert_close(traces.run("four", doubled, first, what="x"), first * 2)
    made = len(passes)  # the check's pass and the trace's own
    torch.testing.assert_close(
        traces.run("four", doubled, torch.ones(7, 4), what="x"), torch.full((7, 4), 2.0)
    )
    assert len(passes) == made, "the trace ran Python"
    torch.testing.assert_close(traces.run("five", doubled, second, what="x"), second * 2)
    assert len(passes) == made + 1, "a shape past the limit is not traced but run"


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
    with caplog.at_level(logging.WARNING, logger="model.traced"):
        assert extractor.trace() is False
    assert [record.getMessage() for record in caplog.records] == [
        "CLIP's image tower runs op by op from Python: it could not be traced "
        "(Tracer cannot infer type of output)"
    ]
    with python_passes(extractor) as passes:
        extractor.embed_pixels(_pixels(2, seed=4))
    assert passes == [1]


@pytest.mark.parametrize("traced", [True, False], ids=["traced", "config_off"])
def test_the_daemon_classifies_through_the_traces_unless_the_config_says_not(
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
    # A file process: the frames reach the model from an arena, preprocessed by their shape's trace.
    with caplog.at_level(logging.INFO, logger="model.traced"):
        start_daemon(model={"traced": traced}, batch={"file_processes": 1}).turns_from_now(1)
    announced = [record for record in caplog.records if "TorchScript trace" in record.getMessage()]
    assert len(announced) == int(traced)
    passes.clear()  # the start-up's own passes: the trace, its check, the warm-up
    with steps_run_from_python(monkeypatch) as steps:
        for index in range(5):
            write_bmp(tmp_path / "inbox" / "cam-01" / f"{index}.bmp", seed=index)
        database = tmp_path / "data" / "results.sqlite3"
        wait_for(lambda: query(database, "SELECT count(*) FROM results") == [(5,)], what="5 rows")
    assert query(database, "SELECT count(*) FROM results WHERE error IS NULL") == [(5,)]
    assert bool(passes) is not traced
    # Traced: Python ran the steps twice, for the one frame shape's trace and its check, at its
    # first batch; then never. Not traced: once a batch.
    assert len(steps) == 2 if traced else len(steps) >= 1


def test_a_trace_that_records_the_batch_size_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    def per_frame_sums(batch: torch.Tensor) -> torch.Tensor:
        return batch.reshape(len(batch), -1).sum(dim=1)  # len(): a constant in a trace

    sample = torch.arange(24.0).reshape(2, 3, 4)
    with caplog.at_level(logging.WARNING, logger="model.traced"):
        traced = trace_checked(per_frame_sums, sample, check=torch.ones(3, 3, 4), what="the sums")
    assert traced is None
    assert [record.getMessage().split(":")[0] for record in caplog.records] == [
        "the sums runs op by op from Python"
    ]


def test_a_trace_giving_nan_is_refused() -> None:
    def logs(batch: torch.Tensor) -> torch.Tensor:
        return torch.log(batch - 10)  # NaN on Python's path too: no difference is a number

    assert trace_checked(logs, torch.ones(2, 3), check=torch.ones(3, 3), what="the logs") is None


@torch.library.custom_op("cctv_gender_tests::device_check", mutates_args=())
def _device_check(features: torch.Tensor) -> torch.Tensor:
    """Raises what CUDA raises once its context is lost, while _DEVICE_LOST holds True."""
    if _DEVICE_LOST:
        raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered (simulated)")
    return features.clone()


_DEVICE_LOST: list[bool] = []


def test_a_failed_device_inside_the_trace_still_stops_the_daemon(
    make_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch's interpreter raises a RuntimeError for any error inside a trace: the batch runs again
    on Python's path, which raises the device's error as what it is, and the daemon stops with its
    frames claimed and nothing failed (tests/test_faults.py has the same on Python's path)."""
    from watcher.commands.main import main

    forward = CLIPVisionModel.forward

    def checked(self: CLIPVisionModel, *args: Any, **kwargs: Any) -> Any:
        output = forward(self, *args, **kwargs)
        output.pooler_output = torch.ops.cctv_gender_tests.device_check(output.pooler_output)
        return output

    # Faked: a lost GPU cannot be had here; an operation inside the tower raises its error instead.
    monkeypatch.setattr(CLIPVisionModel, "forward", checked)
    config = make_config(batch={"size": 4})
    for index in range(4):
        write_bmp(tmp_path / "inbox" / f"{index}.bmp", seed=index)

    import model.traced

    made = model.traced.trace_image_tower

    def made_then_lost(*args: Any, **kwargs: Any) -> Any:
        traced = made(*args, **kwargs)
        assert traced is not None, "the tower with the check in it was not traced"
        _DEVICE_LOST.append(True)  # from the first batch on
        return traced

    monkeypatch.setattr("model.clip_features.trace_image_tower", made_then_lost)
    try:
        with pytest.raises(torch.AcceleratorError):
            main(["watch", "--once", "--config", str(config)])
    finally:
        _DEVICE_LOST.clear()
    assert files_under(tmp_path / "failed") == [] and files_under(tmp_path / "processed") == []
    assert query(tmp_path / "data" / "results.sqlite3", "SELECT count(*) FROM results") == [(0,)]


def test_an_out_of_memory_while_a_trace_is_made_is_raised_and_the_next_batch_traces() -> None:
    # Faked: a GPU out of memory cannot be had here; the function raises one, once.
    memory_short = [True]

    def doubled(batch: torch.Tensor) -> torch.Tensor:
        if memory_short:
            memory_short.clear()
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return batch * 2

    traces = TracedByShape()
    batch = torch.ones(3, 4, dtype=torch.uint8)
    with pytest.raises(torch.OutOfMemoryError):  # typed: the classifier splits the batch
        traces.run("four", doubled, batch, what="the doubling")
    calls: list[int] = []

    def counted(batch: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return doubled(batch)

    torch.testing.assert_close(traces.run("four", counted, batch, what="the doubling"), batch * 2)
    made = len(calls)
    traces.run("four", counted, batch, what="the doubling")
    assert len(calls) == made, "traced at the batch after the shortage"


def test_a_trace_that_recorded_a_branch_on_pixel_values_is_refused() -> None:
    def brightened(batch: torch.Tensor) -> torch.Tensor:
        dark = bool(batch.float().mean() < 100)  # a Python bool of the values: a constant in a trace
        return batch.float() + (50 if dark else 0)

    traces = TracedByShape()
    bright = torch.full((2, 4), 200, dtype=torch.uint8)
    dark = torch.full((2, 4), 10, dtype=torch.uint8)
    torch.testing.assert_close(traces.run("four", brightened, bright, what="x"), bright.float())
    # Traced on bright frames and checked on dark ones (255 - x): refused, so dark frames are right.
    torch.testing.assert_close(traces.run("four", brightened, dark, what="x"), dark.float() + 50)


def test_a_trace_that_fails_runs_the_batch_from_python_and_is_given_up_after_three(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def doubled(batch: torch.Tensor) -> torch.Tensor:
        return torch.ops.cctv_gender_tests.fails_when_told(batch) * 2

    traced = trace_checked(doubled, torch.ones(2, 3), check=torch.ones(1, 3), what="the doubling")
    assert traced is not None
    _FAILING[:] = [True]
    try:
        with caplog.at_level(logging.WARNING, logger="model.traced"):
            for _ in range(4):  # Python's path fails too: what the trace raised, typed
                with pytest.raises(ValueError, match="told to fail"):
                    traced(torch.ones(2, 3))
    finally:
        _FAILING.clear()
    assert [record.getMessage() for record in caplog.records] == [
        "the doubling: its trace failed (ValueError: told to fail), the batch runs op by op from Python",
        "the doubling: its trace failed (ValueError: told to fail), the batch runs op by op from Python",
        "the doubling runs op by op from Python from now on: its trace failed 3 times in a row "
        "(ValueError: told to fail)",
    ]


@torch.library.custom_op("cctv_gender_tests::fails_when_told", mutates_args=())
def _fails_when_told(batch: torch.Tensor) -> torch.Tensor:
    if _FAILING:
        raise ValueError("told to fail")
    return batch.clone()


_FAILING: list[bool] = []
