"""The model stage as TorchScript traces: CLIP's image tower, and a frame shape's preprocessing on
the device, each one call that releases the GIL once.

Run op by op from Python, every operation gives the GIL back and takes it again, and each take
waits while another thread of the daemon runs Python: up to the interpreter's switch interval
(5 ms) a wait. The tower is ~250 operations (ViT-B/32), a batch's preprocessing from its frames'
rows on the device about 30; beside one busy Python thread the tests' tiny CLIP took 278 ms a batch
of 32 instead of 8 on a CPU, and a GPU, whose whole forward is launches of a few microseconds
each, stretches the same way (bench/gil_convoy.py measures both). A trace runs all of them in
torch's own interpreter from one call.

Each trace is made on a batch of two or more and checked before it is used: on a batch of
another size and other values it must give what Python's path gives there, finite, so a batch
size recorded as a constant (`len(batch)` in a future transformers, or a size-one batch's shortcut)
refuses the trace instead of giving wrong rows (tests/test_traced.py holds traces over sizes).
What else a shape decides (the frame size the tower checks, the token count it attends over, the
size the preprocessing resizes to) is fixed by the traced frame shape, which `Traced.fits` holds
every call to. An error inside a trace comes out of torch's interpreter as a plain RuntimeError,
its type lost (a lost GPU, out of memory): the batch then runs again on Python's path, which
raises it as what it is, or gives the result. The tower's trace
shares the model's weights: nothing is copied. torch's graph optimiser is left off
(`optimized_execution(False)`): a trace runs as recorded, the same kernels as Python's path, with
no fusion compiled at run time.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable, Hashable
from typing import Any

import torch

from model.batch_math import l2_normalised, pooled
from model.messages import first_line

logger = logging.getLogger(__name__)

# A trace must give what Python's path gives on its check input: the same kernels run, so any
# difference beyond rounding means an operation was recorded wrong. On unit vectors (the tower)
# and normalised pixels (about ±3: a few float32 steps).
CHECK_TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


class _ImageFeatures(torch.nn.Module):
    """get_image_features and the features' L2 normalisation as a module's forward, which is what
    torch.jit.trace records: the normalisation's few operations would each wait for the GIL too."""

    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return l2_normalised(pooled(self.clip.get_image_features(pixel_values=pixel_values)))


class Traced:
    """`function` traced, for inputs of the traced shape but for the batch's size, dtype and device."""

    def __init__(
        self,
        function: Callable[[torch.Tensor], torch.Tensor],
        traced: Callable[[torch.Tensor], torch.Tensor],
        sample: torch.Tensor,
        *,
        what: str,
    ) -> None:
        self._function = function
        self._traced = traced
        self._item_shape = tuple(sample.shape[1:])
        self._dtype = sample.dtype
        self._device = sample.device
        self._what = what
        self._failed_before = False

    def fits(self, batch: torch.Tensor) -> bool:
        """Inputs this trace may run: anything else takes Python's path."""
        return (
            tuple(batch.shape[1:]) == self._item_shape
            and batch.dtype == self._dtype
            and batch.device == self._device
        )

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        try:
            # The optimiser's setting is per thread: off for this call only (see the module's docstring).
            with torch.jit.optimized_execution(False):  # type: ignore[attr-defined]  # torch.jit: no __all__
                result: torch.Tensor = self._traced(batch)
            return result
        except RuntimeError as error:
            # torch's interpreter puts the operation's own error last, after its traceback.
            failure = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        # Outside the except block: the error's traceback (holding the failed pass's tensors) is gone.
        if not self._failed_before:
            self._failed_before = True
            logger.warning(
                "%s: its trace failed (%s), the batch runs op by op from Python", self._what, failure
            )
        return self._function(batch)


class TracedByShape:
    """Traces of one function, one a kind of input (a frame shape), each made and checked at the
    first batch of its kind, on that batch; at most `limit` kinds (frames of many sizes, as a
    hostile inbox may hold, then run op by op: a trace costs a few passes to make)."""

    def __init__(self, *, limit: int = 8) -> None:
        self._traces: dict[Hashable, Traced | None] = {}
        self._limit = limit
        self._making = threading.Lock()  # batch threads: one trace of a kind, made once

    def run(
        self,
        kind: Hashable,
        function: Callable[[torch.Tensor], torch.Tensor],
        batch: torch.Tensor,
        *,
        what: str,
    ) -> torch.Tensor:
        """`function(batch)`, through its trace for `kind` where there is one."""
        with self._making:
            if kind not in self._traces and len(self._traces) < self._limit:
                # Traced on two frames or more (a batch of one invites shortcuts for size one),
                # checked on one frame more.
                sample = batch if batch.shape[0] >= 2 else torch.cat([batch, batch])
                check = torch.cat([sample, sample[:1]])
                self._traces[kind] = trace_checked(function, sample, check=check, what=what)
            traced = self._traces.get(kind)
        return traced(batch) if traced is not None and traced.fits(batch) else function(batch)


def trace_image_tower(
    clip: Any, *, frame_size: tuple[int, int], device: torch.device, dtype: torch.dtype
) -> Traced | None:
    """The image tower of `clip` (a transformers CLIPModel, in eval mode, on `device` in `dtype`),
    with the L2 normalisation of its features, traced for pixels of `frame_size` (height, width);
    None, with a warning, where it cannot be traced or its trace gives other features."""
    # Seeded noise, traced on two frames and checked on three others: the check needs features
    # that differ from frame to frame, and another batch size.
    noise = torch.randn(5, 3, *frame_size, generator=torch.Generator().manual_seed(0))
    noise = noise.to(device, dtype=dtype)
    tower = _ImageFeatures(clip).eval()
    traced = trace_checked(tower, noise[:2], check=noise[2:], what="CLIP's image tower")
    if traced is not None:
        logger.info("CLIP's image tower runs as a TorchScript trace (model.traced)")
    return traced


def trace_checked(
    function: Callable[[torch.Tensor], torch.Tensor], sample: torch.Tensor, *, check: torch.Tensor, what: str
) -> Traced | None:
    """`function` (torch operations only, of one batch tensor) traced on `sample` (two or more)
    and checked against itself on `check` (another batch size, other values); None, with a warning
    naming `what`, where it cannot be traced or its trace gives another result there."""
    _quiet_tracing()
    try:
        with torch.inference_mode():
            traced = torch.jit.trace(function, sample, check_trace=False)  # type: ignore[no-untyped-call]  # torch: unannotated
            expected = function(check)
            with torch.jit.optimized_execution(False):  # type: ignore[attr-defined]  # as in Traced
                got = traced(check)
    except Exception as error:  # noqa: BLE001 - any failure to trace leaves Python's path, which works
        logger.warning("%s runs op by op from Python: it could not be traced (%s)", what, first_line(error))
        return None
    tolerance = CHECK_TOLERANCE.get(expected.dtype, 1e-5)
    difference = float((got.float() - expected.float()).abs().max()) if got.shape == expected.shape else None
    # `not <=`: a NaN anywhere makes the difference NaN, which no tolerance admits.
    if difference is None or not difference <= tolerance or not bool(torch.isfinite(got).all()):
        logger.warning(
            "%s runs op by op from Python: its trace gave another result (%s against %s, largest "
            "difference %s)",
            what,
            tuple(got.shape),
            tuple(expected.shape),
            "n/a" if difference is None else f"{difference:.3g}",
        )
        return None
    return Traced(function, traced, sample, what=what)


def _quiet_tracing() -> None:
    """Silence what tracing alone warns of, for good rather than around each trace (traces are
    made on batch threads too, and catch_warnings is not thread-safe): torch's deprecation of
    tracing, and its note at each Python value the traced code takes of a shape (fixed by the
    traced shape, which `Traced.fits` holds)."""
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # type: ignore[attr-defined]  # torch.jit: no __all__
    warnings.filterwarnings(
        "ignore", message=r"`torch\.jit\.trace(_method)?` is deprecated", category=FutureWarning
    )
    # transformers asks for it as a layer is traced, and warns that the name is deprecated.
    warnings.filterwarnings(
        "ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning
    )
