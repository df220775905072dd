"""The CUDA path: runs only where a GPU is present (never in CI); skipped elsewhere."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from model.runtime import resolve_runtime
from model.synthetic import write_bmp
from tests.helpers import feature_cosines, query
from watcher.commands.main import main

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_auto_picks_cuda_in_fp16() -> None:
    runtime = resolve_runtime(device="auto", precision="auto")
    assert runtime.device.type == "cuda" and runtime.precision == "fp16"


def test_gpu_fp16_features_match_cpu_fp32(tiny_clip: Path) -> None:
    cosine = feature_cosines(tiny_clip, reference=("cpu", "fp32"), candidate=("cuda", "fp16"))
    assert cosine.min() > 0.999, cosine


def test_watch_once_on_the_gpu(make_config: Callable[..., Path], tmp_path: Path) -> None:
    config = make_config(model={"device": "auto", "precision": "auto"})
    for index in range(20):
        write_bmp(tmp_path / "inbox" / "cam-01" / f"{index}.bmp", width=640, height=480, seed=index)

    assert main(["watch", "--once", "--config", str(config)]) == 0

    rows = query(
        tmp_path / "data" / "results.sqlite3", "SELECT status, count(*) FROM results GROUP BY status"
    )
    assert rows == [("ok", 20)]


def test_frames_are_staged_in_pinned_memory(tiny_clip: Path) -> None:
    import numpy as np

    from model.clip_features import ClipFeatureExtractor

    extractor = ClipFeatureExtractor(str(tiny_clip), runtime=resolve_runtime(device="cuda", precision="fp16"))
    frames = [np.zeros((480, 640, 3), dtype=np.uint8) for _ in range(4)]
    pixels = extractor.preprocess(frames)
    assert pixels.device.type == "cuda"
    assert all(buffer.is_pinned() for buffer in extractor._staging.values())
