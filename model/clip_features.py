"""CLIP image (and prompt) embeddings through transformers' `from_pretrained` path.

One function turns pictures into features for the daemon, training and the benchmarks, so a head
never sees inputs that were prepared differently from the ones it was trained on.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import torch
from PIL import Image

from model.batch_math import chunked, float_bytes, normalised_rows, pooled
from model.clip_loading import load_clip_parts
from model.device_wait import on_host
from model.hub import local_only
from model.identity import identify_clip
from model.images import as_uint8_array
from model.library_logs import single_library_logs
from model.packed import PackedBmp, gathered_on, packed_rows, thread_stream
from model.processor_steps import finish, resized_where_they_lie, resizes_by_steps, steps_from_rows, transform
from model.runtime import TORCH, Runtime
from model.staging import staged
from model.traced import Traced, TracedByShape, trace_image_tower

if TYPE_CHECKING:
    from model.onnx_vision import OnnxVision

logger = logging.getLogger(__name__)

# Bump when anything between decoded pixels and the feature vector changes (processor settings,
# normalisation): heads trained on features of another version are refused.
PREPROCESSING_VERSION = "clip-processor+l2norm/1"

# A decoded picture: a PIL image, its (height, width, 3) uint8 RGB array, or a BMP's pixel rows
# still in a shared buffer (see model.packed).
Picture: TypeAlias = Image.Image | np.ndarray | PackedBmp


class ClipFeatureExtractor:
    """A loaded CLIP model with its image processor and tokenizer. Its image tower runs on torch,
    or on ONNX Runtime when `variant` was handed an exported copy (model.engine_choice decides)."""

    def __init__(self, source: str, *, runtime: Runtime) -> None:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # transformers: unannotated
        single_library_logs()
        self.source = source
        self.runtime = runtime
        # Without the network, a Hub id fails at once with what to run (model.hub), not after retries.
        offline = local_only(source)
        # On a GPU the weights load as stored (a safetensors file's pages mapped, not copied) and take
        # the model's dtype on their way there: loaded as fp16 on the host, they were a converted
        # copy there beside the file's pages (start-up peak and what stays: bench/load_rss.py).
        load_as = runtime.dtype if runtime.device.type == "cpu" else "auto"
        parts = load_clip_parts(source, dtype=load_as, offline=offline)
        self._model, self._processor, self._tokenizer = parts.model, parts.processor, parts.tokenizer
        # What heads record and rows name: the model's content, wherever its folder lies.
        self.identity = identify_clip(source)
        self._model.to(runtime.device, dtype=runtime.dtype).eval()  # type: ignore[arg-type]  # transformers types `to` as a decorator
        # Staging buffers are per thread: on a CPU several batches run through the model at once.
        self._staging_by_thread = threading.local()
        # torch's threads for the model, as configured when it was loaded (model.cpu_threads).
        self.cpu_threads = torch.get_num_threads()
        # The exported image tower, when ONNX Runtime runs it (see `variant`).
        self._onnx: OnnxVision | None = None
        # The image tower traced by warm_up, and arena frames' preprocessing by frame shape, when
        # they may be (see `trace`).
        self._traced: Traced | None = None
        self._traced_steps: TracedByShape | None = None
        where = f"{runtime.device} ({runtime.precision})"
        logger.info("loaded CLIP %s on %s, %d-dimensional features", source, where, self.feature_size)

    @property
    def feature_size(self) -> int:
        dimensions = self._model.config.projection_dim
        assert dimensions is not None, "a CLIP config always has projection_dim"
        return int(dimensions)

    def variant(self, runtime: Runtime, *, onnx: OnnxVision | None = None) -> ClipFeatureExtractor:
        """This model on another CPU engine or precision, sharing the loaded fp32 weights, processor
        and tokenizer: torch (fp32, bf16 autocast), or ONNX Runtime running `onnx`, the exported
        image tower (text features stay on torch)."""
        on_cpu_fp32 = self.runtime.device.type == "cpu" and self.runtime.dtype == torch.float32
        assert on_cpu_fp32 and (runtime.engine == TORCH) == (onnx is None), f"no {runtime.tag} variant here"
        twin = copy.copy(self)
        twin.runtime = runtime
        twin._onnx = onnx
        twin._traced, twin._traced_steps = None, None  # traced for this runtime's dtype and autocast only
        twin._staging_by_thread = threading.local()
        return twin

    def release_torch_image_tower(self) -> None:
        """Let go of torch's image tower (a third of ViT-B/32's weights) once ONNX Runtime runs
        its export: text features (zero-shot prompts) still run on torch."""
        assert self._onnx is not None, "torch runs the image tower here"
        self._model.vision_model = None
        self._model.visual_projection = None  # type: ignore[assignment]  # torch types it as Linear

    def use_cpu_threads(self, count: int) -> None:
        """How many CPU threads the calling thread's model work uses from now on.

        torch's OpenMP setting belongs to the thread that calls it, so each batch worker sets its
        own; ONNX Runtime keeps a session per thread count (model.onnx_vision). A no-op on a GPU.
        """
        if self._onnx is not None:
            self._staging_by_thread.threads = count  # torch's too: preprocessing runs on it
        if self.runtime.device.type == "cpu" and torch.get_num_threads() != count:
            torch.set_num_threads(count)

    @property
    def _staging(self) -> dict[tuple[int, ...], torch.Tensor]:
        cache: dict[tuple[int, ...], torch.Tensor] | None = getattr(self._staging_by_thread, "cache", None)
        if cache is None:
            cache = self._staging_by_thread.cache = {}
        return cache

    @property
    def logit_scale(self) -> float:
        return float(self._model.logit_scale.exp().item())

    def preprocess(self, images: Sequence[Picture]) -> torch.Tensor:
        """Resize, crop and normalise with the model's own processor, on the model's device.

        Pictures travel as uint8 (a quarter of float32's bytes), batched by size through a reused
        staging buffer (pinned memory and a non-blocking copy on CUDA); the processor's
        torchvision transforms then run on the device. A PIL image and its uint8 array give the
        same pixel values.
        """
        pictures = [image if isinstance(image, PackedBmp) else as_uint8_array(image) for image in images]
        groups: dict[tuple[object, ...], list[int]] = {}
        for index, picture in enumerate(pictures):
            key = picture.shape_key if isinstance(picture, PackedBmp) else picture.shape
            groups.setdefault((type(picture), key), []).append(index)
        batches = [
            batch
            for indices in groups.values()
            for batch in self._preprocessed([pictures[index] for index in indices])
        ]
        if len(batches) == 1:
            pixel_values = batches[0]  # one frame size, in order: nothing to reassemble
        else:
            order = [index for indices in groups.values() for index in indices]
            pixel_values = torch.cat(batches)[torch.tensor(order).argsort().to(self.runtime.device)]
        return pixel_values.to(self.runtime.device, dtype=self.runtime.dtype)

    def _preprocessed(self, group: list[np.ndarray | PackedBmp]) -> Iterator[torch.Tensor]:
        """Frames of one size resized, cropped and normalised, in chunks: on a CPU each frame
        resized where its file was read, otherwise staged into one batch on the device first."""
        processor = self._processor
        chunks = chunked(group, frame_bytes=float_bytes(group[0]))
        if isinstance(group[0], PackedBmp):
            yield from (self._packed_pixels(chunk) for chunk in chunks)  # type: ignore[arg-type]  # a group is all of one type
        elif self.runtime.device.type == "cpu" and resizes_by_steps(processor):
            for chunk in chunks:
                yield finish(processor, *resized_where_they_lie(processor, chunk))  # type: ignore[arg-type]  # not PackedBmp
        else:
            for on_device, bgr in self._uploaded(chunks):  # type: ignore[arg-type]  # not PackedBmp
                yield transform(processor, on_device, bgr)

    def _packed_pixels(self, frames: list[PackedBmp]) -> torch.Tensor:
        """Arena frames of one shape on the device, resized, cropped and normalised: through the
        trace of their shape's steps once tracing is on (see `trace`)."""
        block, steps = frames[0].block, steps_from_rows(self._processor, frames[0].block)
        stored = packed_rows(frames, self.runtime.device)
        if self._traced_steps is None:
            return steps(stored)
        what = f"the preprocessing of {block.width}x{block.rows} frames"
        return self._traced_steps.run(frames[0].shape_key, steps, stored, what=what)

    def _uploaded(self, chunks: list[list[np.ndarray]]) -> Iterator[tuple[torch.Tensor, list[bool]]]:
        """Chunks of frames of one size on the device as NCHW uint8, with which hold BGR."""
        pinned = self.runtime.device.type == "cuda"
        for number, chunk in enumerate(chunks):
            host, bgr = staged(chunk, self._staging, pinned=pinned)
            yield self._to_device(host).permute(0, 3, 1, 2), bgr  # NHWC → NCHW, a view
            if number < len(chunks) - 1 and self.runtime.device.type == "cuda":
                # The next chunk reuses the staging buffer its copy to the GPU may still read.
                torch.cuda.current_stream(self.runtime.device).synchronize()

    def _to_device(self, host: torch.Tensor) -> torch.Tensor:
        if self.runtime.device.type != "cuda":
            return host
        # From pinned pages the copy runs asynchronously, overlapping the next launches. The
        # staging buffer is reused only after embed_pixels has synchronised (it returns numpy).
        return host.to(self.runtime.device, non_blocking=True)

    @torch.inference_mode()
    def embed_pixels(self, pixel_values: torch.Tensor) -> np.ndarray:
        """L2-normalised image embeddings (float32, one row per picture) of preprocessed pixels."""
        if self._onnx is not None:
            threads = getattr(self._staging_by_thread, "threads", self.cpu_threads)
            projected = self._onnx.run(np.ascontiguousarray(pixel_values.numpy()), threads=threads)
            return normalised_rows(torch.from_numpy(projected))
        traced = self._traced
        if traced is not None and traced.fits(pixel_values):
            return on_host(traced(pixel_values))  # normalised by the trace itself
        with self._autocast():
            output = self._model.get_image_features(pixel_values=pixel_values)
        return normalised_rows(pooled(output))

    @property
    def model(self) -> Any:  # the transformers CLIPModel (model.onnx_vision exports its image tower)
        return self._model

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the pixels the processor hands the model."""
        crop = getattr(self._processor, "crop_size", None) or {"height": 224, "width": 224}
        return int(crop["height"]), int(crop["width"])

    def blank_pixels(self, batch_size: int) -> torch.Tensor:
        """A batch of zeros shaped as the processor's output, on the model's device."""
        return torch.zeros(
            batch_size, 3, *self.image_size, device=self.runtime.device, dtype=self.runtime.dtype
        )

    def warm_up(self, batch_size: int, *, thread_counts: Sequence[int] = (), traced: bool = True) -> None:
        """One forward pass on a blank batch: kernel selection and weight packing happen here, at
        start-up, instead of in the first real batch (on CUDA the memory it took goes back). On
        ONNX Runtime, one per thread count the batches will use (each has a session of its own).
        With `traced`, torch's image tower is traced first where it may be (see `trace`)."""
        if traced:
            self.trace()
        if self._onnx is None or not thread_counts:
            self.embed_pixels(self.blank_pixels(batch_size))
            if self.runtime.device.type == "cuda":
                # Blocks freed on the stream this pass ran on serve only that stream, and the
                # batches run on streams of their own (model.packed.thread_stream): kept, they
                # would sit idle.
                torch.cuda.empty_cache()
            return
        # ONNX Runtime packs its weights when a session is made; a pass of two frames then takes
        # each session through its first run, in a fraction of a full batch's time at start-up.
        pixels = self.blank_pixels(min(batch_size, 2))
        before = getattr(self._staging_by_thread, "threads", None)
        for count in sorted(set(thread_counts)):
            self.use_cpu_threads(count)
            self.embed_pixels(pixels)
        self._staging_by_thread.threads = before if before is not None else self.cpu_threads

    def trace(self) -> bool:
        """From now on run torch's image tower, and each arena frame shape's preprocessing, as
        traces (model.traced), where torch runs them without autocast on a CPU or GPU: their
        operations then wait for no other thread's Python. True if the tower now runs traced."""
        runtime = self.runtime
        if self._onnx is None and runtime.autocast_dtype is None and runtime.device.type in ("cpu", "cuda"):
            self._traced_steps = self._traced_steps or TracedByShape()
            if self._traced is None and self._model.vision_model is not None:
                self._traced = trace_image_tower(
                    self._model, frame_size=self.image_size, device=runtime.device, dtype=runtime.dtype
                )
        return self._traced is not None

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        dtype = self.runtime.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.runtime.device.type, dtype=dtype)

    def image_features(self, images: Sequence[Picture]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.feature_size), dtype=np.float32)
        with thread_stream(self.runtime.device):
            return self.embed_pixels(self.preprocess(images))

    def taken_in(self, frames: list[PackedBmp]) -> list[PackedBmp]:
        """The frames copied out of their shared buffer onto the model's device, the copies done,
        so the buffer may be reused at once (see watcher.pipeline.arenas)."""
        with thread_stream(self.runtime.device):  # the stream image_features uses in this thread
            moved = gathered_on(frames, self.runtime.device)
            if self.runtime.device.type == "cuda":
                torch.cuda.current_stream(self.runtime.device).synchronize()
        return moved

    @torch.inference_mode()
    def text_features(self, prompts: Sequence[str]) -> np.ndarray:
        tokens = self._tokenizer(list(prompts), padding=True, return_tensors="pt")
        tokens = {name: tensor.to(self.runtime.device) for name, tensor in tokens.items()}
        with self._autocast():
            return normalised_rows(pooled(self._model.get_text_features(**tokens)))
