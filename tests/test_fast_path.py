"""The daemon's fast preprocessing (uint8 batches through the processor on the model's device)
matches the reference preprocessing, so a head sees the inputs it was trained on.

The reference is transformers' PIL-based `CLIPImageProcessorPil`: what `CLIPProcessor` did in the
research script's day (resize with Pillow's bicubic filter, crop, normalise, one image at a time).
Stated tolerance: preprocessed pixels within 0.03 (about two uint8 steps after normalisation) and
features within cosine 0.999 of the reference's.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers import CLIPImageProcessorPil

from model.clip_features import ClipFeatureExtractor, as_uint8_array
from model.dataset import LabelledImage
from model.extraction import extract_labelled
from model.images import decode_pixels, decode_rgb
from model.labels import Label
from model.runtime import Runtime
from model.synthetic import bmp_bytes, write_bmp
from tests.helpers import query
from watcher.commands.main import main
from watcher.intake.claimed import ClaimedFrame
from watcher.pipeline.decoding import page_aligned_memory, read_frame
from watcher.pipeline.stages import FrameBounds
from watcher.store.embeddings import unpack_embeddings

PIXEL_TOLERANCE = 0.03
COSINE_TOLERANCE = 0.999
# Normalised pixels lie within about ±3: a few float32 steps at that size.
FLOAT_ROUNDING = 2e-6

# Camera-shaped frames, one portrait, one tiny, one 8-bit palette: mixed sizes in one batch.
FRAMES = [
    {"width": 640, "height": 480, "seed": 1},
    {"width": 640, "height": 480, "seed": 2},
    {"width": 300, "height": 500, "seed": 3},
    {"width": 13, "height": 7, "seed": 4},
    {"width": 640, "height": 480, "seed": 5, "mode": "P"},
]

NOW = datetime(2026, 11, 29, tzinfo=UTC)


def _bmp(width: int, height: int, *, seed: int, top_down: bool) -> bytearray:
    """A 24-bit BMP, bottom-up as usual, or the same picture stored top-down (negative height,
    rows in reading order)."""
    data = bytearray(bmp_bytes(width=width, height=height, seed=seed))
    if top_down:
        stride = (width * 3 + 3) // 4 * 4
        offset = int.from_bytes(data[10:14], "little")
        rows = [data[offset + row * stride : offset + (row + 1) * stride] for row in range(height)]
        data[offset:] = b"".join(reversed(rows))
        data[22:26] = (-height).to_bytes(4, "little", signed=True)
    return data


@pytest.fixture(scope="module")
def extractor(tiny_clip: Path) -> ClipFeatureExtractor:
    return ClipFeatureExtractor(str(tiny_clip), runtime=Runtime(device=torch.device("cpu"), precision="fp32"))


def _reference_pixels(clip: Path, data: list[bytes]) -> torch.Tensor:
    processor = CLIPImageProcessorPil.from_pretrained(clip)
    images = [Image.open(io.BytesIO(item)).convert("RGB") for item in data]
    return processor(images=images, return_tensors="pt")["pixel_values"]


def test_fast_preprocessing_matches_the_pil_reference(
    tiny_clip: Path, extractor: ClipFeatureExtractor
) -> None:
    data = [bmp_bytes(**frame) for frame in FRAMES]  # type: ignore[arg-type]
    arrays = [decode_pixels(item, max_pixels=10**8) for item in data]  # as the daemon decodes

    fast = extractor.preprocess(arrays)
    reference = _reference_pixels(tiny_clip, data)

    assert fast.shape == reference.shape == (len(FRAMES), 3, 224, 224)
    assert (fast - reference).abs().max().item() <= PIXEL_TOLERANCE
    cosines = np.sum(extractor.embed_pixels(fast) * extractor.embed_pixels(reference), axis=1)
    assert cosines.min() >= COSINE_TOLERANCE, cosines


def test_mixed_sizes_keep_their_order(extractor: ClipFeatureExtractor) -> None:
    # Frames are batched by size on their way to the device; each must come back in its place.
    arrays = [decode_pixels(bmp_bytes(**frame), max_pixels=10**8) for frame in FRAMES]  # type: ignore[arg-type]
    together = extractor.preprocess(arrays)
    one_by_one = torch.cat([extractor.preprocess([array]) for array in arrays])
    assert torch.equal(together, one_by_one)


def test_a_pil_image_and_its_array_give_the_same_pixels(extractor: ClipFeatureExtractor) -> None:
    # Training hands PIL images to the extractor, the daemon uint8 arrays.
    image = decode_rgb(bmp_bytes(width=320, height=240, seed=7), max_pixels=10**8)
    assert torch.equal(extractor.preprocess([image]), extractor.preprocess([as_uint8_array(image)]))


def test_daemon_embeddings_match_the_training_features(
    make_config: Callable[..., Path], tmp_path: Path, extractor: ClipFeatureExtractor
) -> None:
    # End to end: what the daemon stored for a frame is what training extracts from the same file.
    config = make_config(model={"precision": "fp32"}, batch={"size": 4})
    paths = [
        write_bmp(tmp_path / "inbox" / "cam" / f"{index}.bmp", **frame)  # type: ignore[arg-type]
        for index, frame in enumerate(FRAMES)
    ]
    training = extract_labelled(
        [LabelledImage(path=path, label=Label.FEMALE) for path in paths],
        extractor=extractor,
        cache=None,
        batch_size=2,
        max_pixels=10**8,
        max_file_bytes=10**8,
        progress=False,
    ).features

    assert main(["watch", "--once", "--config", str(config)]) == 0

    stored = dict(query(tmp_path / "data" / "results.sqlite3", "SELECT source_path, embedding FROM results"))
    daemon = unpack_embeddings([stored[f"cam/{index}.bmp"] for index in range(len(paths))])
    # Stored as float16: the cosine still clears the tolerance.
    cosines = np.sum(daemon * training, axis=1) / np.linalg.norm(daemon, axis=1)
    assert cosines.min() >= COSINE_TOLERANCE, cosines


def test_batched_steps_equal_the_processor_itself(tiny_clip: Path, extractor: ClipFeatureExtractor) -> None:
    # The fast path runs the processor's resize and crop on whole batches, and its rescale and
    # normalisation as one multiply-add; calling the processor (what `CLIPProcessor` does) must
    # give the same values, to float32 rounding (a subtract and a divide, against one fused step).
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(tiny_clip)
    data = [bmp_bytes(**frame) for frame in FRAMES]  # type: ignore[arg-type]
    pil_images = [decode_rgb(item, max_pixels=10**8) for item in data]
    reference = torch.cat(
        [processor(images=[image], return_tensors="pt")["pixel_values"] for image in pil_images]
    )
    # Pixel views of BMPs (BGR, bottom-up, staged in stored order) and Pillow's RGB arrays, mixed.
    arrays = [decode_pixels(item, max_pixels=10**8) for item in data]
    mixed = [array if index % 2 else as_uint8_array(pil_images[index]) for index, array in enumerate(arrays)]
    torch.testing.assert_close(extractor.preprocess(arrays), reference, rtol=0, atol=FLOAT_ROUNDING)
    torch.testing.assert_close(extractor.preprocess(mixed), reference, rtol=0, atol=FLOAT_ROUNDING)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    width=st.integers(1, 300),
    height=st.integers(1, 300),
    top_down=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_frames_resized_where_they_were_read_equal_the_processor(
    processor: object, extractor: ClipFeatureExtractor, width: int, height: int, top_down: bool, seed: int
) -> None:
    # On a CPU a frame read into writable memory is resized where it lies, its rows as stored
    # (bottom-up) and put upright after resizing: exact, since resizing is symmetric.
    assume(max(width, height) <= 20 * min(width, height))
    data = _bmp(width, height, seed=seed, top_down=top_down)
    view = decode_pixels(memoryview(data), max_pixels=10**8)
    assert view.flags.writeable and view.base is not None  # a view of the bytes as read
    reference = processor(images=[decode_rgb(bytes(data), max_pixels=10**8)], return_tensors="pt")  # type: ignore[operator]
    torch.testing.assert_close(
        extractor.preprocess([view, view]),
        reference["pixel_values"].repeat(2, 1, 1, 1),
        rtol=0,
        atol=FLOAT_ROUNDING,
    )


@pytest.fixture(scope="module")
def processor(tiny_clip: Path) -> object:
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(tiny_clip)


@pytest.mark.parametrize(
    ("width", "height"),
    [
        pytest.param(640, 480, id="aligned_rows"),
        pytest.param(13, 7, id="padded_rows"),
        pytest.param(1, 1, id="one_pixel"),
    ],
)
@pytest.mark.parametrize("top_down", [False, True], ids=["bottom_up", "top_down"])
def test_bmp_pixel_views_equal_pillow(width: int, height: int, top_down: bool) -> None:
    data = _bmp(width, height, seed=width, top_down=top_down)
    view = decode_pixels(bytes(data), max_pixels=10**8)
    assert view.base is not None  # not decoded: a view of the file's bytes
    assert np.array_equal(view, np.asarray(decode_rgb(bytes(data), max_pixels=10**8)))


def test_other_bmp_variants_go_through_pillow() -> None:
    palette = bmp_bytes(width=20, height=10, mode="P")
    assert np.array_equal(
        decode_pixels(palette, max_pixels=10**8), np.asarray(decode_rgb(palette, max_pixels=10**8))
    )


def test_batches_preprocessed_in_two_threads_at_once_stay_apart(extractor: ClipFeatureExtractor) -> None:
    # On a CPU the daemon runs batches side by side (watcher.pipeline.lanes); frames of the same size are
    # staged in a reused buffer, which must not be shared between them.
    import threading

    batches = [
        [
            decode_pixels(bmp_bytes(width=320, height=240, seed=10 * lane + index), max_pixels=10**8)
            for index in range(4)
        ]
        for lane in range(2)
    ]
    expected = [extractor.preprocess(batch) for batch in batches]
    together = threading.Barrier(2)
    mismatches: list[int] = []

    def lane(number: int) -> None:
        for _ in range(20):
            together.wait(timeout=30)
            if not torch.equal(extractor.preprocess(batches[number]), expected[number]):
                mismatches.append(number)

    threads = [threading.Thread(target=lane, args=(number,)) for number in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert mismatches == []


def test_a_batch_worker_sets_its_own_cpu_threads(extractor: ClipFeatureExtractor) -> None:
    # torch's thread count belongs to the calling thread: a lane asking for one thread leaves the
    # others (and the main thread) as they were.
    from concurrent.futures import ThreadPoolExecutor

    main_threads = torch.get_num_threads()

    def one_thread() -> int:
        extractor.use_cpu_threads(1)
        return torch.get_num_threads()

    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(one_thread).result() == 1
    assert torch.get_num_threads() == main_threads


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(width=st.integers(24, 480), height=st.integers(24, 480), extra=st.binary(max_size=64))  # within 20:1
def test_a_frame_read_on_a_cpu_lies_on_a_page_boundary(
    tmp_path: Path, width: int, height: int, extra: bytes
) -> None:
    # Reads into memory 1-31 bytes past a page run several times slower on AMD Zen 3, and a block
    # malloc maps on its own starts 16 bytes past one (bench/read_offsets.py).
    data = bmp_bytes(width=width, height=height, seed=width) + extra
    path = tmp_path / f"{width}x{height}-{len(extra)}.bmp"
    path.write_bytes(data)
    claimed = ClaimedFrame(
        key="k", relative=PurePosixPath(path.name), work_path_text=str(path), received_at=NOW
    )
    read, facts = read_frame(claimed, FrameBounds(max_pixels=10**7, max_file_bytes=10**7))
    assert bytes(read) == data and facts.size_bytes == len(data)
    assert np.frombuffer(read, dtype=np.uint8).ctypes.data % 4096 == 0
    assert not read.readonly  # resized where it lies on a CPU


@given(size=st.integers(0, 40 * 1024 * 1024))
@settings(max_examples=25, deadline=None)
def test_page_aligned_memory_is_as_long_as_asked_and_starts_a_page(size: int) -> None:
    memory = page_aligned_memory(size)
    assert len(memory) == size and not memory.readonly
    assert size == 0 or np.frombuffer(memory, dtype=np.uint8).ctypes.data % 4096 == 0
