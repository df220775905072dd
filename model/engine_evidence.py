"""The evidence behind the engine choice (model.engine_choice): the fidelity gate and the speed
of each engine, measured on this machine, and the JSON file that keeps them.

The gate: features of GATE_FRAMES generated frames (`gate_frames`: the same on every machine)
within cosine GATE_COSINE of torch fp32's, frame by frame (the minimum counts). The speed: frames/s
of the bare forward at TIMING_BATCH on every thread. Both are kept per CPU model and instruction
sets (`cpu_signature`) and thread count, since neither carries from one CPU to another (int8 on
a CPU without VNNI takes another code path than on one with it).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.clip_features import ClipFeatureExtractor
from model.messages import first_line

logger = logging.getLogger(__name__)

GATE_COSINE = 0.99
GATE_FRAMES = 16
TIMING_BATCH = 16
# Each engine is timed for about this long after a warm-up pass (at least two passes).
TIMING_SECONDS = 0.5


@dataclass(frozen=True)
class Measurement:
    """One engine on this machine: its worst frame's cosine to torch fp32, and its speed (None when
    it failed the gate: it was not timed)."""

    min_cosine: float
    frames_per_second: float | None

    @property
    def passed(self) -> bool:
        return self.min_cosine >= GATE_COSINE


def measure(
    extractor: ClipFeatureExtractor, variants: dict[str, ClipFeatureExtractor]
) -> dict[str, Measurement]:
    """The gate and the speed of each variant, against `extractor` (torch fp32) on generated frames."""
    pixels = extractor.preprocess(gate_frames())
    reference = extractor.embed_pixels(pixels)
    timing = extractor.blank_pixels(TIMING_BATCH).normal_(generator=torch.Generator().manual_seed(0))
    results = {}
    for tag, variant in variants.items():
        try:
            cosine = float(np.min(np.sum(variant.embed_pixels(pixels) * reference, axis=1)))
            speed = frames_per_second(variant, timing) if cosine >= GATE_COSINE else None
        except Exception as error:  # noqa: BLE001 - an engine that fails to run is left out, not fatal
            logger.warning(
                "%s left out: it failed on the gate's frames: %s", tag, first_line(error, named=True)
            )
            continue
        results[tag] = Measurement(min_cosine=cosine, frames_per_second=speed)
    return results


def frames_per_second(extractor: ClipFeatureExtractor, pixels: torch.Tensor) -> float:
    """The bare forward's speed on every thread: one warm-up pass, then passes for TIMING_SECONDS."""
    extractor.use_cpu_threads(extractor.cpu_threads)
    extractor.embed_pixels(pixels)
    passes, started = 0, time.perf_counter()
    while passes < 2 or time.perf_counter() - started < TIMING_SECONDS:
        extractor.embed_pixels(pixels)
        passes += 1
    return pixels.shape[0] * passes / (time.perf_counter() - started)


def gate_frames() -> list[np.ndarray]:
    """GATE_FRAMES fixed 320×240 RGB frames with a scene's structure (gradients, blocks, edges,
    noise), the same on every machine: the gate compares engines on these."""
    rng = np.random.default_rng(20261126)
    height, width = 240, 320
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for _ in range(GATE_FRAMES):
        angle = rng.uniform(0, np.pi)
        ramp = (np.cos(angle) * columns / width + np.sin(angle) * rows / height) * 255
        picture = np.stack([ramp * rng.uniform(0.3, 1.0) for _ in range(3)], axis=-1)
        for _ in range(6):  # blocks of flat colour, as people and furniture are to a 224-pixel crop
            top, left = rng.integers(0, height - 40), rng.integers(0, width - 40)
            picture[top : top + rng.integers(20, 120), left : left + rng.integers(20, 120)] = rng.uniform(
                0, 255, 3
            )
        picture += rng.normal(0, 12, picture.shape)  # sensor noise
        frames.append(np.clip(picture, 0, 255).astype(np.uint8))
    return frames


def cpu_signature() -> str:
    """A short name for this CPU's model and instruction sets: speeds measured on one CPU do not
    carry to another, so each keeps its own evidence."""
    return hashlib.sha256(f"{platform.machine()}\n{_cpu_model()}\n{_cpu_flags()}".encode()).hexdigest()[:12]


def describe(tag: str, result: Measurement) -> str:
    speed = f"{result.frames_per_second:.1f} frames/s" if result.frames_per_second else "not timed"
    return f"{tag} cosine ≥ {result.min_cosine:.5f}, {speed}"


def read_evidence(path: Path | None) -> dict[str, Measurement]:
    if path is None:
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {
            str(tag): Measurement(
                _number(entry["min_cosine"]), _number(entry["frames_per_second"], none=True)
            )
            for tag, entry in raw["engines"].items()
        }
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        logger.warning("%s unreadable (%s): measuring again", path, error)
        return {}


def _number(value: object, *, none: bool = False) -> Any:
    """A finite number as JSON holds one (not a bool, a string or a list), or None where allowed."""
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise ValueError(f"{value!r} is not a measurement")
    return float(value)


def write_evidence(path: Path, evidence: dict[str, Measurement], *, threads: int) -> None:
    import onnxruntime

    document: dict[str, Any] = {
        "cpu": _cpu_model(),
        "threads": threads,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "gate": {"min_cosine": GATE_COSINE, "frames": GATE_FRAMES},
        "timing_batch": TIMING_BATCH,
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "engines": {
            tag: {"min_cosine": result.min_cosine, "frames_per_second": result.frames_per_second}
            for tag, result in evidence.items()
        },
    }
    staging = path.with_name(f".{path.name}.tmp")
    try:
        staging.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        staging.replace(path)
    finally:
        staging.unlink(missing_ok=True)


def _cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def _cpu_flags() -> str:
    return " ".join(sorted(_cpuinfo_field("flags").split()))


def _cpuinfo_field(name: str) -> str:
    """The first core's `name` in /proc/cpuinfo; empty where there is none."""
    return _first_core().get(name, "")


@functools.cache
def _first_core() -> dict[str, str]:
    """The first core's fields in /proc/cpuinfo, read once a process (its model and flags name
    the evidence file, and the file records the model)."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    return fields


def evidence_path(folder: Path, *, threads: int) -> Path:
    return folder / f"evidence-{cpu_signature()}-{threads}t.json"
