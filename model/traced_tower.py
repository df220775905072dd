"""CLIP's image tower as a TorchScript trace: one call that runs every layer without the GIL.

Run op by op from Python, the tower gives the GIL back and takes it again around each of its
~250 operations (ViT-B/32), and each time it must wait while another thread of the daemon runs
Python: up to the interpreter's switch interval (5 ms) a wait. Beside one busy Python thread the
tests' tiny CLIP took 296 ms a batch of 32 instead of 10 on a CPU, and a GPU, whose whole forward is
launches of a few microseconds each, stretches the same way (bench/gil_convoy.py measures both).
The trace runs all of them in torch's own interpreter from one call, which releases the GIL once.

The trace is made once per loaded model, on two frames of seeded noise at the processor's crop
size, and is checked against the tower run by Python on that batch before it is used. Its shapes
follow the batch's size (the tower reads it from the input); anything but the traced frame size,
channels and dtype runs on Python's path instead. It shares the model's weights: nothing is
copied. torch's graph optimiser is left off (`optimized_execution(False)`): the trace runs as
recorded, the same kernels as the Python path, with no fusion compiled at run time.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch

from model.batch_math import l2_normalised, pooled
from model.messages import first_line

logger = logging.getLogger(__name__)

# The trace must give what Python's path gives on the check batch: the same kernels run, so any
# difference beyond rounding means an operation was recorded wrong.
CHECK_TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}  # on unit vectors


class _ImageFeatures(torch.nn.Module):
    """get_image_features and the features' L2 normalisation as a module's forward, which is what
    torch.jit.trace records: the normalisation's few operations would each wait for the GIL too."""

    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return l2_normalised(pooled(self.clip.get_image_features(pixel_values=pixel_values)))


class TracedTower:
    """The traced image tower, for pixels of the traced (channels, height, width), dtype and device."""

    def __init__(self, traced: torch.jit.ScriptModule, sample: torch.Tensor) -> None:
        self._traced = traced
        self._frame_shape = tuple(sample.shape[1:])
        self._dtype = sample.dtype
        self._device = sample.device

    def fits(self, pixel_values: torch.Tensor) -> bool:
        """Pixels this trace may run: anything else takes Python's path."""
        return (
            tuple(pixel_values.shape[1:]) == self._frame_shape
            and pixel_values.dtype == self._dtype
            and pixel_values.device == self._device
        )

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The pixels' L2-normalised float32 features, on their device."""
        # The optimiser's setting is per thread: off for this call only (see the module's docstring).
        with torch.jit.optimized_execution(False):  # type: ignore[attr-defined]  # torch.jit: no __all__
            features: torch.Tensor = self._traced(pixel_values)
        return features


def trace_image_tower(
    clip: Any, *, frame_size: tuple[int, int], device: torch.device, dtype: torch.dtype
) -> TracedTower | None:
    """The image tower of `clip` (a transformers CLIPModel, in eval mode, on `device` in `dtype`)
    traced for pixels of `frame_size` (height, width), or None, with a warning, where it cannot be
    traced or its trace gives other features than Python's path."""
    # Two frames of seeded noise: the check needs features that differ from frame to frame.
    noise = torch.randn(2, 3, *frame_size, generator=torch.Generator().manual_seed(0))
    sample = noise.to(device, dtype=dtype)
    tower = _ImageFeatures(clip).eval()
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            # torch marks tracing as deprecated, and notes each Python bool the tower takes of a
            # shape (the frame size it checks, the token count it attends over): both fixed by
            # the frame shape, which `fits` holds every call to.
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)  # type: ignore[attr-defined]  # as above
            expected = tower(sample)
            traced = torch.jit.trace(tower, sample, check_trace=False)  # type: ignore[no-untyped-call]  # torch: unannotated
            result = TracedTower(traced, sample)
            got = result(sample)
    except Exception as error:  # noqa: BLE001 - any failure to trace leaves Python's path, which works
        logger.warning(
            "CLIP's image tower runs op by op from Python: it could not be traced (%s)", first_line(error)
        )
        return None
    tolerance = CHECK_TOLERANCE.get(sample.dtype, 1e-5)
    difference = float((got - expected).abs().max())
    if got.shape != expected.shape or difference > tolerance:
        logger.warning(
            "CLIP's image tower runs op by op from Python: its trace gave other features (%s against %s, "
            "largest difference %.3g)",
            tuple(got.shape),
            tuple(expected.shape),
            difference,
        )
        return None
    logger.info("CLIP's image tower runs as a TorchScript trace (model.traced)")
    return result
