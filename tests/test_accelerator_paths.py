"""The GPU-only decisions, checked on the CPU (CI has no GPU; tests/test_gpu.py runs them for real).

What cannot run here is the device itself; what decides to use it can: `auto` picking CUDA in
fp16, a clear error for a CUDA device that is missing, one batch in flight beside the CPU's file
work, and the CPU thread settings left alone. The overlapped daemon loop itself is driven on the
CPU in tests/test_daemon_live.py.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from model.clip_features import ClipFeatureExtractor
from model.runtime import ModelLoadError, Runtime, resolve_runtime
from watcher.pipeline.lanes import GPU_LANES, plan_lanes


def test_auto_picks_cuda_in_fp16_where_a_gpu_is_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # nothing is allocated on it here
    runtime = resolve_runtime(device="auto", precision="auto")
    assert runtime.device == torch.device("cuda") and runtime.precision == "fp16"
    # fp16 weights on the GPU; CPU-style bf16 autocast is not used there.
    assert runtime.dtype == torch.float16 and runtime.autocast_dtype is None


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelLoadError, match="model.device is 'cuda:1' but no CUDA device is available"):
        resolve_runtime(device="cuda:1", precision="auto")


def test_on_a_gpu_batches_overlap_with_the_threads_as_configured(tiny_clip: Path) -> None:
    extractor = ClipFeatureExtractor(
        str(tiny_clip), runtime=Runtime(device=torch.device("cpu"), precision="fp32")
    )
    extractor.runtime = Runtime(device=torch.device("cuda"), precision="fp16")  # as if loaded on one
    lanes = plan_lanes(on_accelerator=True, cpu_threads=extractor.cpu_threads)
    assert lanes.count == GPU_LANES and not lanes.shares_cores

    def threads_after_asking_for_one() -> int:
        before = torch.get_num_threads()
        extractor.use_cpu_threads(1)  # the GPU does the model's work: the CPU's threads stay
        return torch.get_num_threads() - before

    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(threads_after_asking_for_one).result() == 0


def test_batch_gpu_lanes_reaches_the_batches_in_flight(tiny_clip: Path, tmp_path: Path) -> None:
    import numpy as np

    from model.heads import ZeroShotHead
    from watcher.pipeline.processing import BatchProcessor
    from watcher.pipeline.stages import FrameBounds, OutputFolders
    from watcher.store.engine import make_engine

    extractor = ClipFeatureExtractor(
        str(tiny_clip), runtime=Runtime(device=torch.device("cpu"), precision="fp32")
    )
    extractor.runtime = Runtime(device=torch.device("cuda"), precision="fp16")  # as if loaded on one
    head = ZeroShotHead(class_embeddings=np.eye(2, extractor.feature_size), logit_scale=1.0, version="z")
    processor = BatchProcessor(
        engine=make_engine(f"sqlite:///{tmp_path / 'results.sqlite3'}", busy_timeout_ms=1000),
        extractor=extractor,
        head=head,
        folders=OutputFolders(processed=tmp_path / "processed", failed=tmp_path / "failed"),
        bounds=FrameBounds(max_pixels=10**6, max_file_bytes=10**7),
        store_embeddings=False,
        gpu_lanes=5,  # file_processes 0: no page-locked arenas, which need the GPU
    )
    try:
        assert processor.lanes.count == 5 and processor.model_on_accelerator
    finally:
        processor.close()


def test_the_weights_reach_the_device_in_its_precision(tiny_clip: Path) -> None:
    """Loaded as stored and converted on their way to the device (bench/load_rss.py: no fp16 copy
    on the host); torch's `meta` device stands in for the GPU, which this machine lacks."""
    extractor = ClipFeatureExtractor(
        str(tiny_clip), runtime=Runtime(device=torch.device("meta"), precision="fp16")
    )
    weights = [*extractor.model.parameters(), *extractor.model.buffers()]
    floating = [tensor for tensor in weights if tensor.is_floating_point()]
    assert floating and all(tensor.device.type == "meta" for tensor in weights)
    assert {tensor.dtype for tensor in floating} == {torch.float16}
