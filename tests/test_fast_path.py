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
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessorPil

from model.clip_features import ClipFeatureExtractor, Runtime, as_uint8_array
from model.dataset import LabelledImage
from model.extraction import extract_labelled
from model.images import decode_rgb
from model.labels import Label
from tests.helpers import bmp_bytes, query, write_bmp
from watcher.cli import main
from watcher.store import unpack_embeddings

PIXEL_TOLERANCE = 0.03
COSINE_TOLERANCE = 0.999

# Camera-shaped frames, one portrait, one tiny, one 8-bit palette: mixed sizes in one batch.
FRAMES = [
    {"width": 640, "height": 480, "seed": 1},
    {"width": 640, "height": 480, "seed": 2},
    {"width": 300, "height": 500, "seed": 3},
    {"width": 13, "height": 7, "seed": 4},
    {"width": 640, "height": 480, "seed": 5, "mode": "P"},
]


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
    arrays = [as_uint8_array(decode_rgb(item, max_pixels=10**8)) for item in data]

    fast = extractor.preprocess(arrays)
    reference = _reference_pixels(tiny_clip, data)

    assert fast.shape == reference.shape == (len(FRAMES), 3, 224, 224)
    assert (fast - reference).abs().max().item() <= PIXEL_TOLERANCE
    cosines = np.sum(extractor.embed_pixels(fast) * extractor.embed_pixels(reference), axis=1)
    assert cosines.min() >= COSINE_TOLERANCE, cosines


def test_mixed_sizes_keep_their_order(extractor: ClipFeatureExtractor) -> None:
    # Frames are batched by size on their way to the device; each must come back in its place.
    arrays = [as_uint8_array(decode_rgb(bmp_bytes(**frame), max_pixels=10**8)) for frame in FRAMES]  # type: ignore[arg-type]
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
        progress=False,
    ).features

    assert main(["watch", "--once", "--config", str(config)]) == 0

    stored = dict(query(tmp_path / "data" / "results.sqlite3", "SELECT source_path, embedding FROM results"))
    daemon = unpack_embeddings([stored[f"cam/{index}.bmp"] for index in range(len(paths))])
    # Stored as float16: the cosine still clears the tolerance.
    cosines = np.sum(daemon * training, axis=1) / np.linalg.norm(daemon, axis=1)
    assert cosines.min() >= COSINE_TOLERANCE, cosines
