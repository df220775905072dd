"""CLIP image (and prompt) embeddings through transformers' `from_pretrained` path.

One function turns pictures into features for the daemon, training and the benchmarks, so a head
never sees inputs that were prepared differently from the ones it was trained on.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np
import torch
from PIL import Image

logger = logging.getLogger(__name__)

# Bump when anything between decoded pixels and the feature vector changes (processor settings,
# normalisation): heads trained on features of another version are refused.
PREPROCESSING_VERSION = "clip-processor+l2norm/1"

# A decoded picture: a PIL image, or its (height, width, 3) uint8 RGB array.
Picture: TypeAlias = Image.Image | np.ndarray

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class ModelLoadError(Exception):
    """The configured CLIP model cannot be loaded; the message says which and why."""


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    # What the model computes in: "fp32", "fp16" or "bf16".
    precision: str

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype. bf16 on a CPU keeps fp32 weights and runs under autocast."""
        if self.device.type == "cpu" and self.precision == "bf16":
            return torch.float32
        return _DTYPES[self.precision]

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.device.type == "cpu" and self.precision == "bf16" else None


def cpu_has_fast_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """AVX512-BF16 or AMX: the CPU multiplies bf16 natively (about twice fp32's speed for CLIP)."""
    try:
        flags = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_runtime(*, device: str, precision: str) -> Runtime:
    """Turn the config's `auto` choices into a concrete device and precision."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"model.device is {device!r} but no CUDA device is available")
    if precision == "auto":
        # fp16 halves memory traffic on a GPU. CPUs lack fast fp16 kernels; bf16 autocast pays
        # where the CPU has native bf16 instructions, fp32 elsewhere.
        if resolved.type == "cuda":
            precision = "fp16"
        else:
            precision = "bf16" if cpu_has_fast_bf16() else "fp32"
    return Runtime(device=resolved, precision=precision)


class ClipFeatureExtractor:
    """A loaded CLIP model with its image processor and tokenizer."""

    def __init__(self, source: str, *, runtime: Runtime) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.source = source
        self.runtime = runtime
        try:
            self._model = CLIPModel.from_pretrained(source, dtype=runtime.dtype)
            self._processor = AutoImageProcessor.from_pretrained(source)
            self._tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError, KeyError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            hint = (
                ""
                if Path(source).is_dir()
                else " (model.clip: a Hugging Face id needs the network once; a local folder loads offline)"
            )
            raise ModelLoadError(f"cannot load CLIP model {source!r}: {first_line}{hint}") from None
        self._model.to(runtime.device).eval()
        logger.info(
            "loaded CLIP %s on %s (%s), %d-dimensional features",
            source,
            runtime.device,
            runtime.precision,
            self.feature_size,
        )

    @property
    def feature_size(self) -> int:
        return int(self._model.config.projection_dim)

    @property
    def logit_scale(self) -> float:
        return float(self._model.logit_scale.exp().item())

    def preprocess(self, images: Sequence[Picture]) -> torch.Tensor:
        """Resize, crop and normalise with the model's own processor, on the model's device.

        Pictures travel as uint8 (a quarter of float32's bytes), batched by size, through pinned
        memory with a non-blocking copy on CUDA; the processor's torchvision transforms then run
        on the device. A PIL image and its uint8 array give the same pixel values.
        """
        by_shape: dict[tuple[int, ...], list[int]] = {}
        arrays = [as_uint8_array(image) for image in images]
        for index, array in enumerate(arrays):
            by_shape.setdefault(array.shape, []).append(index)
        pixel_values: list[torch.Tensor | None] = [None] * len(arrays)
        for indices in by_shape.values():
            stacked = torch.from_numpy(np.stack([arrays[index] for index in indices]))
            on_device = self._to_device(stacked).permute(0, 3, 1, 2)  # NHWC → NCHW, a view
            batch = self._processor(images=on_device, return_tensors="pt", device=self.runtime.device)
            for index, pixels in zip(indices, batch["pixel_values"], strict=True):
                pixel_values[index] = pixels
        return torch.stack(pixel_values).to(self.runtime.device, dtype=self.runtime.dtype)  # type: ignore[arg-type]

    def _to_device(self, host: torch.Tensor) -> torch.Tensor:
        if self.runtime.device.type != "cuda":
            return host
        # Pinned pages let the copy run asynchronously, overlapping the next launches.
        return host.pin_memory().to(self.runtime.device, non_blocking=True)

    @torch.inference_mode()
    def embed_pixels(self, pixel_values: torch.Tensor) -> np.ndarray:
        """L2-normalised image embeddings (float32, one row per picture) of preprocessed pixels."""
        with self._autocast():
            output = self._model.get_image_features(pixel_values=pixel_values)
        return _normalised_rows(_pooled(output))

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        dtype = self.runtime.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.runtime.device.type, dtype=dtype)

    def image_features(self, images: Sequence[Picture]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.feature_size), dtype=np.float32)
        return self.embed_pixels(self.preprocess(images))

    @torch.inference_mode()
    def text_features(self, prompts: Sequence[str]) -> np.ndarray:
        tokens = self._tokenizer(list(prompts), padding=True, return_tensors="pt")
        tokens = {name: tensor.to(self.runtime.device) for name, tensor in tokens.items()}
        with self._autocast():
            return _normalised_rows(_pooled(self._model.get_text_features(**tokens)))


def as_uint8_array(picture: Picture) -> np.ndarray:
    """The (height, width, 3) uint8 RGB array of a picture, without a copy when it already is one."""
    if isinstance(picture, np.ndarray):
        return picture
    return np.asarray(picture if picture.mode == "RGB" else picture.convert("RGB"))


def _pooled(output: object) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output is the projected embedding;
    # older releases returned the tensor itself.
    return output if isinstance(output, torch.Tensor) else output.pooler_output  # type: ignore[attr-defined]


def _normalised_rows(features: torch.Tensor) -> np.ndarray:
    features = features.float()
    features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return features.cpu().numpy()
