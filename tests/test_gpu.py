"""The CUDA path: runs only where a GPU is present (never in CI); skipped elsewhere."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from model.clip_features import ClipFeatureExtractor, resolve_runtime
from model.images import decode_rgb
from tests.helpers import bmp_bytes, query, write_bmp
from watcher.cli import main

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_auto_picks_cuda_in_fp16() -> None:
    runtime = resolve_runtime(device="auto", precision="auto")
    assert runtime.device.type == "cuda" and runtime.precision == "fp16"


def test_gpu_fp16_features_match_cpu_fp32(tiny_clip: Path) -> None:
    images = [decode_rgb(bmp_bytes(width=640, height=480, seed=seed), max_pixels=10**8) for seed in range(8)]
    cpu = ClipFeatureExtractor(str(tiny_clip), runtime=resolve_runtime(device="cpu", precision="fp32"))
    gpu = ClipFeatureExtractor(str(tiny_clip), runtime=resolve_runtime(device="cuda", precision="fp16"))

    cosine = np.sum(cpu.image_features(images) * gpu.image_features(images), axis=1)

    # Features are L2-normalised, so the dot product is the cosine similarity.
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
