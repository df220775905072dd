"""Which engine runs CLIP's image tower: the one function the daemon, training, `evaluate`,
`rescore` and `backfill` all load CLIP through.

On CUDA it is torch (fp16 unless the config says otherwise). On a CPU, the engines the config
allows (model.runtime.cpu_candidates) are each checked against torch fp32 (the fidelity gate) and
timed once per machine (model.engine_evidence), and the fastest that passes runs. What was
measured is kept as evidence (a JSON file per CPU model and thread count) beside the exported
models, in the engine cache:

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
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from model.clip_features import PREPROCESSING_VERSION, ClipFeatureExtractor
from model.engine_evidence import (
    GATE_COSINE,
    Measurement,
    describe,
    evidence_path,
    measure,
    read_evidence,
    write_evidence,
)
from model.messages import first_line
from model.onnx_vision import (
    EXPORT_VERSION,
    OnnxVision,
    export_image_tower,
    quantize_int8,
    unchanged_since_made,
)
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

ENGINE_CACHE = ".engines"
REFERENCE = Runtime(device=torch.device("cpu"), precision="fp32", engine=TORCH)


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
    folder = None
    try:
        folder = engine_folder(cache_root, extractor) if cache_root is not None else None
    except ImportError as error:  # a dependency, but an install can still lack it
        logger.warning("ONNX Runtime left out: %s", error)
    if folder is None:
        candidates = [candidate for candidate in candidates if candidate.engine == TORCH]
    if candidates in ([], [REFERENCE]):
        return _alone(extractor)
    try:
        with _locked(folder):
            evidence_file = evidence_path(folder, threads=extractor.cpu_threads) if folder else None
            evidence = read_evidence(evidence_file)
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
            logger.warning("%s left out: the export failed: %s", candidate.tag, first_line(error, named=True))
    return variants


def _session(extractor: ClipFeatureExtractor, folder: Path, candidate: Runtime) -> OnnxVision:
    """ONNX Runtime over the cached export; a cached file changed since it was made (its digest) or
    that will not load (cut short when a disk filled, say) is exported again, once."""
    path = _exported(extractor, folder, precision=candidate.precision)
    try:
        if not unchanged_since_made(path):
            raise ValueError("changed on disk since it was made (its SHA-256 is another)")
        return OnnxVision(path, threads=extractor.cpu_threads)
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types
        logger.warning("%s will not load (%s): exporting it again", path, first_line(error, named=True))
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
        "; ".join(describe(tag, result) for tag, result in measured.items()),
    )
    if path is not None:
        try:
            write_evidence(path, recorded | measured, threads=extractor.cpu_threads)
        except OSError as error:  # a full disk: this start still uses what it measured
            logger.warning("cannot keep the evidence in %s (%s): the next start measures again", path, error)
    return measured


@contextlib.contextmanager
def _locked(folder: Path | None) -> Iterator[None]:
    """The folder's lock, held while exporting and measuring: daemons starting together (and Ray
    actors) wait for the first one instead of exporting beside it and skewing its timings."""
    if folder is None:
        yield
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = (folder / ".lock").open("a")
    except OSError:
        if not (folder / ".lock").is_file():
            raise
        # A registry this user may only read (a cache made by another account): flock works on a
        # read-only handle, so this start still waits for an export in progress, then reads.
        handle = (folder / ".lock").open("r")
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
