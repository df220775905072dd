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


@pytest.mark.parametrize("file_processes", ["auto", 0])
def test_watch_once_on_the_gpu(
    make_config: Callable[..., Path], tmp_path: Path, file_processes: object
) -> None:
    config = make_config(
        model={"device": "auto", "precision": "auto"}, batch={"size": 8, "file_processes": file_processes}
    )
    for index in range(20):
        write_bmp(tmp_path / "inbox" / "cam-01" / f"{index}.bmp", width=640, height=480, seed=index)

    assert main(["watch", "--once", "--config", str(config)]) == 0

    rows = query(
        tmp_path / "data" / "results.sqlite3", "SELECT status, count(*) FROM results GROUP BY status"
    )
    assert rows == [("ok", 20)]


def test_arenas_are_pinned_and_packed_frames_give_the_decoded_frames_features(tiny_clip: Path) -> None:
    import numpy as np

    from model.clip_features import ClipFeatureExtractor
    from model.images import decode_pixels, plain_bmp_block
    from model.packed import PackedBmp, thread_stream
    from model.synthetic import bmp_bytes
    from watcher.pipeline.arenas import ArenaPool
    from watcher.pipeline.file_work import ALIGNMENT

    extractor = ClipFeatureExtractor(str(tiny_clip), runtime=resolve_runtime(device="cuda", precision="fp16"))
    device = extractor.runtime.device
    files = [bmp_bytes(width=640, height=480, seed=seed) for seed in range(6)]
    pool = ArenaPool(count=1, frames=len(files), device=device)
    try:
        with pool.lease() as arena:
            assert arena.tensor.is_pinned()
            packed, cursor = [], 0
            for data in files:  # one after another, as a file worker reads its share (file_work.read_share)
                arena.tensor[cursor : cursor + len(data)] = torch.frombuffer(
                    bytearray(data), dtype=torch.uint8
                )
                block = plain_bmp_block(data, max_pixels=10**8)
                assert block is not None
                packed.append(PackedBmp(arena.tensor, block.moved(cursor)))
                cursor = -(-(cursor + len(data)) // ALIGNMENT) * ALIGNMENT
            from_arena = extractor.image_features(packed)
            # What a batch does before giving its arena back: the frames on the device, the copies
            # done (nothing left on the thread's stream), so the next batch may read into the arena.
            taken = extractor.taken_in(packed)
            with thread_stream(device):
                assert torch.cuda.current_stream(device).query()
            arena.tensor.fill_(0)
            from_device = extractor.image_features(taken)
        decoded = extractor.image_features([decode_pixels(data, max_pixels=10**8) for data in files])
    finally:
        pool.close()
    gathered = {id(frame.buffer) for frame in taken}
    assert len(gathered) == 1 and taken[0].buffer.is_cuda
    # The span crossed as one copy and the frames were cut out of it on the device, evenly spaced
    # in a buffer of their own: their rows and nothing else (no headers, no alignment padding).
    assert taken[0].buffer.numel() == sum(frame.block.nbytes for frame in packed)
    assert [frame.block.offset for frame in taken] == [
        index * packed[0].block.nbytes for index in range(len(files))
    ]
    for features in (from_arena, from_device):
        cosines = (features * decoded).sum(axis=1)
        assert np.all(cosines > 0.9999), cosines


def test_frames_are_staged_in_pinned_memory(tiny_clip: Path) -> None:
    import numpy as np

    from model.clip_features import ClipFeatureExtractor

    extractor = ClipFeatureExtractor(str(tiny_clip), runtime=resolve_runtime(device="cuda", precision="fp16"))
    frames = [np.zeros((480, 640, 3), dtype=np.uint8) for _ in range(4)]
    pixels = extractor.preprocess(frames)
    assert pixels.device.type == "cuda"
    assert all(buffer.is_pinned() for buffer in extractor._staging.values())


def test_a_buffer_that_cannot_be_pinned_leaves_no_error_behind() -> None:
    # A refused cudaHostRegister stays as its thread's "last error", which torch's check after
    # that thread's next kernel launch raised as the kernel's: the daemon's main thread builds
    # the arenas and later computes a reloaded head's text features.
    from model.packed import pin_host_memory, unpin_host_memory

    device = torch.device("cuda")
    buffer = torch.zeros(1 << 20, dtype=torch.uint8)
    assert pin_host_memory(buffer, device)
    try:
        assert not pin_host_memory(buffer, device)  # registered already: refused
        assert (torch.ones(4, device=device) * 2).sum().item() == 8  # a kernel launch here, checked
    finally:
        unpin_host_memory(buffer, device)


def test_traces_on_the_lanes_streams_give_python_s_features(tiny_clip: Path) -> None:
    """Lanes call the traces (the tower, an arena frame shape's preprocessing) from threads of their
    own, each on its own stream (model.packed.thread_stream), with no pass run op by op."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from model.clip_features import ClipFeatureExtractor
    from model.images import plain_bmp_block
    from model.packed import PackedBmp
    from model.synthetic import bmp_bytes

    runtime = resolve_runtime(device="cuda", precision="fp16")
    op_by_op = ClipFeatureExtractor(str(tiny_clip), runtime=runtime)
    traced = ClipFeatureExtractor(str(tiny_clip), runtime=runtime)
    assert traced.trace()

    def arena_frames(count: int) -> list[PackedBmp]:
        files = [bmp_bytes(width=640, height=480, seed=seed) for seed in range(count)]
        buffer = torch.zeros(count * 2**20, dtype=torch.uint8)
        frames = []
        for index, data in enumerate(files):
            buffer[index * 2**20 : index * 2**20 + len(data)] = torch.frombuffer(
                bytearray(data), dtype=torch.uint8
            )
            block = plain_bmp_block(data, max_pixels=10**8)
            assert block is not None
            frames.append(PackedBmp(buffer, block.moved(index * 2**20)))
        return frames

    batches = [arena_frames(count) for count in (2, 7, 1, 33, 16)]
    python_passes: list[int] = []
    hook = traced.model.vision_model.register_forward_pre_hook(lambda *_: python_passes.append(1))
    try:
        traced.image_features(batches[0])  # the frame shape's preprocessing traced, on one thread
        with ThreadPoolExecutor(max_workers=3) as lanes:
            got = list(lanes.map(lambda frames: traced.image_features(traced.taken_in(frames)), batches))
    finally:
        hook.remove()
    assert python_passes == []
    for frames, features in zip(batches, got, strict=True):
        expected = op_by_op.image_features(frames)
        assert np.sum(features * expected, axis=1).min() > 0.9999


def test_a_pass_on_the_gpu_counts_its_wait_for_the_device(tiny_clip: Path) -> None:
    import numpy as np

    from model.clip_features import ClipFeatureExtractor
    from model.device_wait import take_device_wait

    extractor = ClipFeatureExtractor(str(tiny_clip), runtime=resolve_runtime(device="cuda", precision="fp16"))
    take_device_wait()
    extractor.image_features([np.zeros((480, 640, 3), np.uint8)] * 4)
    # The copy of the features to the host waits for the pass: the batch's "waiting for the device".
    assert take_device_wait() > 0
    assert take_device_wait() == 0  # taken: the next batch starts from nothing
