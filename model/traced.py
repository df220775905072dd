"""The model stage as TorchScript traces: CLIP's image tower, and a frame shape's preprocessing on
the device, each one call that releases the GIL once.

Run op by op from Python, every operation gives the GIL back and takes it again, and each take
waits while another thread of the daemon runs Python: up to the interpreter's switch interval
(5 ms) a wait. The tower is ~250 operations (ViT-B/32), a batch's preprocessing from its frames'
rows on the device about 30; beside one busy Python thread the tests' tiny CLIP took 250 ms in the
tower for a batch of 32 instead of 10 on a CPU, and a GPU, whose whole forward is launches of a
few microseconds each, stretches the same way (bench/gil_convoy.py measures both). A trace runs
all of them in torch's own interpreter from one call.

Each trace is made on two frames and checked before it is used: on a batch of another size and
other values it must give what Python's path gives there, so a batch size recorded as a constant
(`len(batch)` in a future transformers, or a size-one batch's shortcut) or a branch on pixel
values refuses the trace instead of giving wrong rows (tests/test_traced.py). What else a shape
decides (the frame size the tower checks, the token count it attends over, the size the
preprocessing resizes to) is fixed by the traced frame shape, which `Traced.fits` holds every call
to. An error inside a trace comes out of torch's interpreter as a plain RuntimeError, its type
lost (a lost GPU, out of memory): the batch then runs again on Python's path, which raises it as
what it is, or gives the result. The tower's trace shares the model's weights: nothing is
copied. torch's graph optimiser is left off (`optimized_execution(False)`): a trace runs as
recorded, the same kernels as Python's path, with no fusion compiled at run time.
"""

from __future__ import annotations

import logging
import re
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
# A trace whose runs fail this many times in a row (while Python's path then gives the result) is
# given up, as is a frame shape whose trace could not be made or checked this many times.
FAILURES_BEFORE_GIVING_UP = 3
# `ValueError: ...`, `torch.AcceleratorError: ...`: the line naming an error in the interpreter's text.
_NAMED_ERROR = re.compile(r"^[\w.]*(Error|Exception)\b.*:")


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
        self._failures = 0  # in a row

    def fits(self, batch: torch.Tensor) -> bool:
        """Inputs this trace may run: anything else takes Python's path."""
        return (
            tuple(batch.shape[1:]) == self._item_shape
            and batch.dtype == self._dtype
            and batch.device == self._device
        )

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if self._failures < FAILURES_BEFORE_GIVING_UP:
            try:
                result = _unoptimised(self._traced, batch)
                self._failures = 0
                return result
            except RuntimeError as error:
                failure = operation_error(error)
            # Outside the except block: its traceback (holding the failed pass's tensors) is gone.
            self._failures += 1
            if self._failures == FAILURES_BEFORE_GIVING_UP:
                logger.warning(
                    "%s runs op by op from Python from now on: its trace failed %d times in a row (%s)",
                    self._what,
                    self._failures,
                    failure,
                )
            else:
                logger.warning(
                    "%s: its trace failed (%s), the batch runs op by op from Python", self._what, failure
                )
        return self._function(batch)


class TracedByShape:
    """Traces of one function (of a uint8 batch), one a kind of input (a frame shape), each made
    and checked at the first batch of its kind; at most `limit` made, and at most `tries` kinds
    tried (frames of many sizes, as a hostile inbox may hold, then run op by op: a trace costs a few
    passes to make)."""

    def __init__(self, *, limit: int = 8, tries: int = 32) -> None:
        self._traces: dict[Hashable, Traced | None] = {}
        self._attempts: dict[Hashable, int] = {}
        self._limit = limit
        self._tries = tries
        self._making = threading.Lock()  # batch threads: a kind's trace made once, by one of them
        self._full_logged = False

    def run(
        self,
        kind: Hashable,
        function: Callable[[torch.Tensor], torch.Tensor],
        batch: torch.Tensor,
        *,
        what: str,
    ) -> torch.Tensor:
        """`function(batch)`, through its trace for `kind` where there is one. A device error or an
        out-of-memory while the trace is made is raised as it is, and the trace tried again at the
        kind's next batch."""
        traced = self._traces[kind] if kind in self._traces else self._made(kind, function, batch, what=what)
        return traced(batch) if traced is not None and traced.fits(batch) else function(batch)

    def _made(
        self,
        kind: Hashable,
        function: Callable[[torch.Tensor], torch.Tensor],
        batch: torch.Tensor,
        *,
        what: str,
    ) -> Traced | None:
        with self._making:
            if kind in self._traces:
                return self._traces[kind]  # made by another batch thread meanwhile
            made = sum(traced is not None for traced in self._traces.values())
            if made >= self._limit or (kind not in self._attempts and len(self._attempts) >= self._tries):
                if not self._full_logged:  # once: kinds past the limit are not kept, a hostile inbox has many
                    self._full_logged = True
                    logger.warning(
                        "%s and later shapes run op by op from Python: %d traced already", what, made
                    )
                return None
            # Traced on two frames (a batch of one invites shortcuts for size one) and checked on
            # one frame of other values: at most two frames a pass, as chunked() allows for one.
            sample = batch[:2] if batch.shape[0] >= 2 else torch.cat([batch, batch])
            check = (255 - sample[:1]) if sample.dtype == torch.uint8 else -sample[:1]
            traced = trace_checked(function, sample, check=check, what=what)
            self._attempts[kind] = self._attempts.get(kind, 0) + 1
            if traced is not None or self._attempts[kind] >= FAILURES_BEFORE_GIVING_UP:
                self._traces[kind] = traced
            return traced


def _unoptimised(traced: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
    """`traced(batch)` as recorded: the optimiser's setting is per thread, off for this call only
    (see the module's docstring)."""
    with torch.jit.optimized_execution(False):  # type: ignore[attr-defined]  # torch.jit: no __all__
        return traced(batch)


def operation_error(error: BaseException) -> str:
    """The error of the operation that failed inside a trace: torch's interpreter gives its own
    first line and a traceback, the operation's error (`RuntimeError: ...`) last but for any Python
    frames after it."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if _NAMED_ERROR.match(line)]
    if not named:
        return first_line(error)
    # An error raised by Python inside the trace reads `RuntimeError: ValueError: ...`.
    inner = named[-1].removeprefix("RuntimeError: ")
    return inner if _NAMED_ERROR.match(inner) else named[-1]


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
    naming `what`, where it cannot be traced or its trace gives another result there. A device
    error or an out-of-memory on the way is raised as it is: the next batch may trace."""
    try:
        with torch.inference_mode():
            traced = torch.jit.trace(function, sample, check_trace=False)  # type: ignore[no-untyped-call]  # torch: unannotated
            expected = function(check)
            got = _unoptimised(traced, check)
    except (torch.OutOfMemoryError, torch.AcceleratorError):
        raise
    except Exception as error:  # noqa: BLE001 - any failure to trace leaves Python's path, which works
        reason = operation_error(error) if isinstance(error, RuntimeError) else first_line(error)
        logger.warning("%s runs op by op from Python: it could not be traced (%s)", what, reason)
        return None
    # What the function computes in: the fp16 tower's features are float32 after normalising.
    tolerance = CHECK_TOLERANCE.get(sample.dtype, CHECK_TOLERANCE[torch.float32])
    difference = float((got.float() - expected.float()).abs().max()) if got.shape == expected.shape else None
    # `not <=`: a NaN anywhere makes the difference NaN, which no tolerance admits.
    if difference is None or not difference <= tolerance:
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


# What tracing alone warns of, silenced once, when this module is first imported (on the main
# thread, at start-up: changing warnings filters later, from batch threads, races with
# catch_warnings in the decode threads): torch's deprecation of tracing, its note at each Python
# value the traced code takes of a shape (fixed by the traced shape, which `Traced.fits` holds;
# each trace is checked on other values and another batch size), and transformers' deprecated
# property name, which tracing reads.
warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # type: ignore[attr-defined]  # torch.jit: no __all__
warnings.filterwarnings(
    "ignore", message=r"`torch\.jit\.trace(_method)?` is deprecated", category=FutureWarning
)
warnings.filterwarnings(
    "ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning
)
