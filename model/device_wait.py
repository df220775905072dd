"""How long each thread has waited for the device's answers: of a batch's model stage on a GPU,
the device's own time (and its queue) told apart from launching the work, which is Python and
waits for the GIL (BatchProcessor's stage seconds: "model: waiting for the device")."""

from __future__ import annotations

import threading
import time

import numpy as np
import torch

_by_thread = threading.local()


def on_host(features: torch.Tensor) -> np.ndarray:
    """`features` as numpy on the host. On a GPU their copy waits for the device to finish the work
    launched before it: that wait is added to this thread's (take_device_wait)."""
    if features.device.type == "cpu":
        return features.numpy()
    started = time.perf_counter()
    copied = features.cpu().numpy()
    _by_thread.seconds = getattr(_by_thread, "seconds", 0.0) + time.perf_counter() - started
    return copied


def take_device_wait() -> float:
    """Seconds this thread waited for the device's answers since its last call (0 on a CPU)."""
    waited: float = getattr(_by_thread, "seconds", 0.0)
    _by_thread.seconds = 0.0
    return waited
