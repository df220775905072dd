"""CLIP's image tower exported to ONNX, and run by ONNX Runtime on the CPU.

    export_image_tower(model, path)      the vision transformer and its projection, fp32, opset 17
    quantize_int8(fp32_path, int8_path)  dynamic int8 quantisation of the linear layers
    OnnxVision(path, threads=N)          sessions over an exported file, one per thread count

The export takes preprocessed pixels (n, 3, 224, 224, fp32) and gives the projected, not yet
normalised, image embedding: exactly what `CLIPModel.get_image_features` returns, so the rest of
the feature path (normalisation, heads) is the same whichever engine ran.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.batch_math import pooled
from model.registry_files import write_atomically

logger = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "pixel_values"
OUTPUT_NAME = "image_embeds"
# ONNX Runtime runs a batch this many frames at a time: on the 2-core EPYC VM (AVX2), int8 passes
# of 8 or 16 frames ran 3-8% faster than passes of 32, two lanes at once (their activations stay
# in cache); the rows are the same either way.
MICRO_BATCH = 16
# Bump when the export or quantisation settings change: cached exports of another version are
# made again (model.engine_choice keys its cache folder by it).
EXPORT_VERSION = "vision+projection/opset17/int8-dynamic-qint8/1"
# An export's staging file is written in one go near its end: one untouched this long is a dead
# process's.
STALE_STAGING_S = 600.0


class _ImageTower(torch.nn.Module):
    """`get_image_features` as a module of its own: the graph torch.onnx.export traces."""

    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pooled(self.clip.get_image_features(pixel_values=pixel_values))


def export_image_tower(model: Any, path: Path, *, image_size: tuple[int, int]) -> None:
    """Export `model`'s (a CLIPModel in fp32) image tower to `path`, written whole or not at all."""
    staging = _staging_for(path)
    example = torch.zeros(2, 3, *image_size)
    try:
        # The tracer warns about transformers' shape checks, which hold for every input the
        # processor makes (one image size): noise in the daemon's log.
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _ImageTower(model).eval(),
                (example,),
                str(staging),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=OPSET,
                # The TorchScript exporter: the dynamo one needs onnxscript and takes minutes here.
                dynamo=False,
            )
        os.replace(staging, path)
        _record_digest(path)
    finally:
        staging.unlink(missing_ok=True)


def quantize_int8(source: Path, path: Path) -> None:
    """`source` with its MatMul/Gemm weights in int8 and activations quantised per batch at run
    time (ONNX Runtime's dynamic quantisation: no calibration data needed)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    staging = _staging_for(path)
    quiet = _QuantiserChatter()
    logging.getLogger().addFilter(quiet)
    try:
        quantize_dynamic(source, staging, weight_type=QuantType.QInt8)
        os.replace(staging, path)
        _record_digest(path)
    finally:
        logging.getLogger().removeFilter(quiet)
        staging.unlink(missing_ok=True)
        # The quantiser's shape-inferred copy of `source`, beside it: removed by the quantiser only
        # when it succeeds. A failure (a full disk) would leave a file of the export's size behind.
        source.with_name(f"{source.stem}-inferred{source.suffix}").unlink(missing_ok=True)


def unchanged_since_made(path: Path) -> bool:
    """Whether the export at `path` is still the file that was made (its SHA-256, recorded beside
    it as `.<name>.sha256`): bytes changed on disk (a bad sector, a copy cut short or another
    model's export copied over it) may still load, and serve wrong features to every frame. An
    export an earlier version made, with nothing recorded, is taken as it is and recorded now.
    About 60 ms a start for ViT-B/32's int8 export (88 MB), and no memory: where the gate run
    again on a frame at each start took 340 MiB more of the daemon's peak."""
    digest, record = _digest(path), _digest_file(path)
    try:
        recorded = record.read_bytes().decode("ascii", errors="replace").strip()
    except FileNotFoundError:
        _record_digest(path, digest)
        return True
    except OSError as error:  # unreadable here (not this user's, say): served unchecked, as before
        logger.debug("cannot read the digest of %s: %s", path, error)
        return True
    return recorded == digest


def _record_digest(path: Path, digest: str | None = None) -> None:
    try:
        write_atomically(_digest_file(path), (digest or _digest(path)) + "\n")
    except OSError as error:  # a read-only cache: the export serves unchecked, as before
        logger.debug("cannot record the digest of %s: %s", path, error)


def _digest(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _digest_file(path: Path) -> Path:
    return path.with_name(f".{path.name}.sha256")


def _staging_for(path: Path) -> Path:
    """This process's staging file for `path`, once those of processes that are gone are removed:
    a start killed mid-export (systemd's start timeout, say) left one the size of the export
    (about 350 MB for ViT-B/32), and every such start would leave another. Only those untouched
    for STALE_STAGING_S: a process id of another container sharing the cache means nothing here."""
    prefix, suffix = f".{path.name}.", ".tmp"
    for stale in path.parent.glob(f"{prefix}*{suffix}"):
        pid = stale.name[len(prefix) : -len(suffix)]
        try:
            untouched = time.time() - stale.stat().st_mtime > STALE_STAGING_S
        except OSError:
            continue  # gone meanwhile
        if pid.isdigit() and untouched and not _alive(int(pid)):
            stale.unlink(missing_ok=True)
    return path.with_name(f"{prefix}{os.getpid()}{suffix}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's: alive
    return True


class _QuantiserChatter(logging.Filter):
    """The quantiser logs a line per tensor on the root logger (and advice to pre-process, which
    dynamic quantisation does not need): kept out of the daemon's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in Path(record.pathname).parts


class OnnxVision:
    """An exported image tower under ONNX Runtime's CPU provider.

    A session's thread pool is fixed when it is made, and the daemon runs batches on one thread
    each beside each other and a lone batch on all threads (watcher.pipeline.lanes): so one session
    per thread count, made on first use. `run` is safe from several threads at once."""

    def __init__(self, path: Path, *, threads: int) -> None:
        self.path = path
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._session(threads)  # a damaged file fails here, at start-up

    def _session(self, threads: int) -> Any:
        session = self._sessions.get(threads)
        if session is not None:
            return session
        import onnxruntime as ort

        with self._lock:
            if threads not in self._sessions:
                options = ort.SessionOptions()
                options.intra_op_num_threads = max(1, threads)
                options.inter_op_num_threads = 1
                options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                options.log_severity_level = 3  # errors only: its warnings name graph internals
                # Idle pool threads sleep rather than spin: file work shares these cores.
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                self._sessions[threads] = ort.InferenceSession(
                    str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
                )
            return self._sessions[threads]

    def run(self, pixels: np.ndarray, *, threads: int) -> np.ndarray:
        """The projected image embeddings (n, projection_dim) of preprocessed fp32 pixels, run
        MICRO_BATCH frames at a time."""
        session = self._session(threads)
        parts = [
            session.run([OUTPUT_NAME], {INPUT_NAME: pixels[start : start + MICRO_BATCH]})[0]
            for start in range(0, len(pixels), MICRO_BATCH)
        ]
        return np.asarray(parts[0] if len(parts) == 1 else np.concatenate(parts), dtype=np.float32)
