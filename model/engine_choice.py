"""Which engine runs CLIP's image tower: the one function the daemon, training, `evaluate`,
`rescore` and `backfill` all load CLIP through.

On CUDA it is torch (fp16 unless the config says otherwise). On a CPU, the engines the config
allows (model.runtime.cpu_candidates) are each checked and timed once per machine:

- the fidelity gate: features of GATE_FRAMES generated frames within cosine GATE_COSINE of torch
  fp32's, frame by frame (the minimum counts), or the engine is not used;
- the speed: frames/s of the bare forward at TIMING_BATCH on every thread;

and the fastest that passes runs. What was measured is kept as evidence (a JSON file per CPU
model and thread count) beside the exported models, in the engine cache:

    <registry>/.engines/<key>/image-tower-fp32.onnx     the export (key: CLIP content, preprocessing,
    <registry>/.engines/<key>/image-tower-int8.onnx      export settings, ONNX Runtime version)
    <registry>/.engines/<key>/evidence-<cpu>-<N>t.json   gate and timings on this CPU, N threads

Later starts read both and measure nothing. Anything that goes wrong on the way (the export, the
quantisation, a session that will not load, a cache that cannot be written) leaves ONNX Runtime
out with one warning line: torch fp32 always runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.clip_features import PREPROCESSING_VERSION, ClipFeatureExtractor
from model.onnx_vision import EXPORT_VERSION, OnnxVision, export_image_tower, quantize_int8
from model.runtime import (
    ONNXRUNTIME,
    TORCH,
    ModelLoadError,
    Runtime,
    cpu_candidates,
    cpu_has_fast_bf16,
    resolve_device,
)

logger = logging.getLogger(__name__)

GATE_COSINE = 0.99
GATE_FRAMES = 16
TIMING_BATCH = 16
# Each engine is timed for about this long after a warm-up pass (at least two passes).
TIMING_SECONDS = 0.5
ENGINE_CACHE = ".engines"
REFERENCE = Runtime(device=torch.device("cpu"), precision="fp32", engine=TORCH)


@dataclass(frozen=True)
class Measurement:
    """One engine on this machine: its worst frame's cosine to torch fp32, and its speed (None when
    it failed the gate: it was not timed)."""

    min_cosine: float
    frames_per_second: float | None

    @property
    def passed(self) -> bool:
        return self.min_cosine >= GATE_COSINE


@dataclass(frozen=True)
class Engines:
    """The engine CLIP runs on (`chosen`), and every engine the config allows that passed the gate
    on this machine, the chosen one included (`evaluate` and `train` compare them side by side)."""

    chosen: ClipFeatureExtractor
    passing: dict[str, ClipFeatureExtractor]


def load_clip(
    source: str, *, device: str, engine: str, precision: str, cache_root: Path | None
) -> ClipFeatureExtractor:
    """CLIP from `model.clip` on the engine and precision that `model.device`, `model.runtime` and
    `model.precision` allow, chosen as the module says. Raises ModelLoadError with a one-line reason.

    Only the chosen engine is loaded; when it is ONNX Runtime, torch's copy of the image tower is
    let go (the text tower stays, for zero-shot prompts)."""
    chosen = load_engines(
        source, device=device, engine=engine, precision=precision, cache_root=cache_root, every_passing=False
    ).chosen
    if chosen.runtime.engine != TORCH:
        chosen.release_torch_image_tower()
    return chosen


def load_engines(
    source: str,
    *,
    device: str,
    engine: str,
    precision: str,
    cache_root: Path | None,
    every_passing: bool = True,
) -> Engines:
    """As load_clip, with the other engines that passed the gate loaded too (`every_passing`)."""
    if precision == "int8" and engine == TORCH:
        raise ModelLoadError(
            "model.precision 'int8' runs on ONNX Runtime: set model.runtime to 'auto' or 'onnxruntime'"
        )
    # int8 exists on ONNX Runtime only, on the CPU: `auto` then means the CPU, even beside a GPU.
    resolved = resolve_device(device, engine=ONNXRUNTIME if precision == "int8" else engine)
    if resolved.type == "cuda":
        runtime = Runtime(resolved, "fp16" if precision == "auto" else precision)
        return _alone(ClipFeatureExtractor(source, runtime=runtime))
    if precision == "fp16" or (engine == TORCH and precision != "auto"):
        # Nothing to choose: the config names one torch runtime.
        return _alone(ClipFeatureExtractor(source, runtime=Runtime(resolved, precision)))
    candidates = cpu_candidates(engine=engine, precision=precision, fast_bf16=cpu_has_fast_bf16())
    if not candidates:
        raise ModelLoadError(f"model.runtime {engine!r} has no model.precision {precision!r} on a CPU")
    extractor = ClipFeatureExtractor(source, runtime=REFERENCE)
    if candidates == [REFERENCE]:
        return _alone(extractor)
    return choose_cpu_engine(extractor, candidates, cache_root=cache_root, every_passing=every_passing)


def _alone(extractor: ClipFeatureExtractor) -> Engines:
    return Engines(chosen=extractor, passing={extractor.runtime.tag: extractor})


def choose_cpu_engine(
    extractor: ClipFeatureExtractor,
    candidates: list[Runtime],
    *,
    cache_root: Path | None,
    every_passing: bool = True,
) -> Engines:
    """The fastest of `candidates` that passes the gate, as `extractor` (torch fp32) variants.

    Candidates the evidence lacks are loaded (exported first when need be) and measured; then, from
    the fastest down, the first that loads is chosen. A later start, with every candidate in the
    evidence, loads only the chosen one (and, with `every_passing`, the others that passed)."""
    if cache_root is None:
        candidates = [candidate for candidate in candidates if candidate.engine == TORCH]
    folder = engine_folder(cache_root, extractor) if cache_root is not None else None
    try:
        with _locked(folder):
            evidence_file = (
                folder / f"evidence-{cpu_signature()}-{extractor.cpu_threads}t.json" if folder else None
            )
            evidence = _read_evidence(evidence_file)
            loaded = _variants(extractor, [c for c in candidates if c.tag not in evidence], folder)
            if loaded:
                evidence |= _measured(extractor, loaded, evidence_file, evidence)
            ranked = _ranked(candidates, evidence)
            passing: dict[str, ClipFeatureExtractor] = {}
            for candidate in ranked:
                variant = loaded.get(candidate.tag) or _variants(extractor, [candidate], folder).get(
                    candidate.tag
                )
                if variant is not None:
                    passing[candidate.tag] = variant
                    if not every_passing:
                        break
    except OSError as error:
        logger.warning("engine cache %s unusable (%s): CLIP runs on torch fp32", folder, error)
        return _alone(extractor)
    if not passing:
        # Each engine left out has had its warning line (export failed, under the gate).
        logger.info("CLIP's image tower on torch-fp32: no engine the config allows is usable here")
        return _alone(extractor)
    chosen = next(iter(passing))
    logger.info(
        "CLIP's image tower on %s, the fastest that passed the gate on this CPU (%s)",
        chosen,
        ", ".join(f"{c.tag} {evidence[c.tag].frames_per_second or 0:.1f} frames/s" for c in ranked),
    )
    return Engines(chosen=passing[chosen], passing=passing)


def _ranked(candidates: list[Runtime], evidence: dict[str, Measurement]) -> list[Runtime]:
    """The candidates measured and passing, fastest first; one warning for each under the gate."""
    for candidate in candidates:
        result = evidence.get(candidate.tag)
        if result is not None and not result.passed:
            logger.warning(
                "%s left out: its features are within cosine %.4f of torch fp32's, under the gate %.2f",
                candidate.tag, result.min_cosine, GATE_COSINE,
            )  # fmt: skip
    passing = [c for c in candidates if c.tag in evidence and evidence[c.tag].passed]
    return sorted(passing, key=lambda c: -(evidence[c.tag].frames_per_second or 0.0))


def engine_folder(cache_root: Path, extractor: ClipFeatureExtractor) -> Path:
    """The cache folder of this CLIP model's exports: keyed by the model's content, the
    preprocessing version, the export settings and the ONNX Runtime version that quantised it."""
    import onnxruntime

    key = "\n".join((extractor.identity.key, PREPROCESSING_VERSION, EXPORT_VERSION, onnxruntime.__version__))
    return cache_root / ENGINE_CACHE / hashlib.sha256(key.encode()).hexdigest()[:16]


def _variants(
    extractor: ClipFeatureExtractor, candidates: list[Runtime], folder: Path | None
) -> dict[str, ClipFeatureExtractor]:
    """Each candidate as a runnable extractor; ONNX Runtime's only where its export loads."""
    variants: dict[str, ClipFeatureExtractor] = {}
    for candidate in candidates:
        if candidate.engine == TORCH:
            variants[candidate.tag] = extractor.variant(candidate)
            continue
        assert folder is not None, "ONNX Runtime candidates come with a cache folder"
        try:
            variants[candidate.tag] = extractor.variant(
                candidate, onnx=_session(extractor, folder, candidate)
            )
        except Exception as error:  # noqa: BLE001 - any failure of the export leaves torch running
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            logger.warning(
                "%s left out: the export failed: %s: %s", candidate.tag, type(error).__name__, first_line
            )
    return variants


def _session(extractor: ClipFeatureExtractor, folder: Path, candidate: Runtime) -> OnnxVision:
    """ONNX Runtime over the cached export; a cached file that will not load (cut short when a
    disk filled, say) is exported again, once."""
    path = _exported(extractor, folder, precision=candidate.precision)
    try:
        return OnnxVision(path, threads=extractor.cpu_threads)
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types
        logger.warning("%s will not load (%s): exporting it again", path, str(error).strip().splitlines()[0])
        path.unlink()
        if candidate.precision != "fp32":
            (folder / "image-tower-fp32.onnx").unlink(missing_ok=True)  # its source may be the damaged one
        return OnnxVision(
            _exported(extractor, folder, precision=candidate.precision), threads=extractor.cpu_threads
        )


def _exported(extractor: ClipFeatureExtractor, folder: Path, *, precision: str) -> Path:
    """The exported image tower in `precision`, made now when the cache lacks it."""
    fp32 = folder / "image-tower-fp32.onnx"
    if not fp32.is_file():
        started = time.perf_counter()
        export_image_tower(extractor.model, fp32, image_size=extractor.image_size)
        logger.info("exported CLIP's image tower to %s in %.1f s", fp32, time.perf_counter() - started)
    if precision == "fp32":
        return fp32
    int8 = folder / "image-tower-int8.onnx"
    if not int8.is_file():
        started = time.perf_counter()
        quantize_int8(fp32, int8)
        logger.info("quantised it to int8 in %.1f s", time.perf_counter() - started)
    return int8


def _measured(
    extractor: ClipFeatureExtractor,
    variants: dict[str, ClipFeatureExtractor],
    path: Path | None,
    recorded: dict[str, Measurement],
) -> dict[str, Measurement]:
    """Gate and timing of `variants` on this CPU, added to the evidence file."""
    started = time.perf_counter()
    measured = measure(extractor, variants)
    logger.info(
        "measured %s on this CPU in %.1f s: %s",
        ", ".join(variants),
        time.perf_counter() - started,
        "; ".join(_describe(tag, result) for tag, result in measured.items()),
    )
    if path is not None:
        _write_evidence(path, recorded | measured, threads=extractor.cpu_threads)
    return measured


def measure(
    extractor: ClipFeatureExtractor, variants: dict[str, ClipFeatureExtractor]
) -> dict[str, Measurement]:
    """The gate and the speed of each variant, against `extractor` (torch fp32) on generated frames."""
    pixels = extractor.preprocess(gate_frames())
    reference = extractor.embed_pixels(pixels)
    timing = extractor.blank_pixels(TIMING_BATCH).normal_(generator=torch.Generator().manual_seed(0))
    results = {}
    for tag, variant in variants.items():
        cosine = float(np.min(np.sum(variant.embed_pixels(pixels) * reference, axis=1)))
        speed = frames_per_second(variant, timing) if cosine >= GATE_COSINE else None
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


def _describe(tag: str, result: Measurement) -> str:
    speed = f"{result.frames_per_second:.1f} frames/s" if result.frames_per_second else "not timed"
    return f"{tag} cosine ≥ {result.min_cosine:.5f}, {speed}"


def _read_evidence(path: Path | None) -> dict[str, Measurement]:
    if path is None:
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {
            tag: Measurement(
                min_cosine=float(entry["min_cosine"]), frames_per_second=entry["frames_per_second"]
            )
            for tag, entry in raw["engines"].items()
        }
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        logger.warning("%s unreadable (%s): measuring again", path, error)
        return {}


def _write_evidence(path: Path, evidence: dict[str, Measurement], *, threads: int) -> None:
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
    staging.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    staging.replace(path)


def _cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def _cpu_flags() -> str:
    return " ".join(sorted(_cpuinfo_field("flags").split()))


def _cpuinfo_field(name: str) -> str:
    """The first core's `name` in /proc/cpuinfo; empty where there is none."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == name:
                return value.strip()
    return ""


@contextlib.contextmanager
def _locked(folder: Path | None) -> Iterator[None]:
    """The folder's lock, held while exporting and measuring: daemons starting together (and Ray
    actors) wait for the first one instead of exporting beside it and skewing its timings."""
    if folder is None:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
