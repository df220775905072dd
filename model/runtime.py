"""Where, on which engine and in what precision CLIP's image tower runs: the config's `auto`
choices made concrete.

On CUDA it is torch (fp16 unless told otherwise). On a CPU several engines can run it, and which is
fastest depends on the CPU (README, "Engines on a CPU"): `cpu_candidates` lists those the config
allows, and model.engine_choice measures them once per machine and picks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

TORCH = "torch"
ONNXRUNTIME = "onnxruntime"
# The precisions each engine runs on a CPU: ONNX Runtime's int8 is dynamic quantisation of the
# linear layers (weights int8, activations quantised per batch), its fp32 the exported graph.
CPU_PRECISIONS = {TORCH: ("fp32", "bf16"), ONNXRUNTIME: ("fp32", "int8")}


class ModelLoadError(Exception):
    """The configured CLIP model cannot be loaded; the message says which and why."""


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    # What the model computes in: "fp32", "fp16", "bf16" or "int8".
    precision: str
    # What runs the image tower: "torch", or "onnxruntime" (on a CPU only).
    engine: str = TORCH

    @property
    def tag(self) -> str:
        """`engine-precision`, as rows' embedding_model and the feature cache record it."""
        return f"{self.engine}-{self.precision}"

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the weights and of the pixels handed to the engine. bf16 on a CPU keeps fp32
        weights and runs under autocast; ONNX Runtime takes fp32 pixels whatever it computes in."""
        if self.device.type == "cpu" and self.precision in ("bf16", "int8"):
            return torch.float32
        return _DTYPES[self.precision]

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        if self.engine == TORCH and self.device.type == "cpu" and self.precision == "bf16":
            return torch.bfloat16
        return None


def cpu_has_fast_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """AVX512-BF16 or AMX: the CPU multiplies bf16 natively."""
    try:
        flags = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_device(device: str, *, engine: str = "auto") -> torch.device:
    """The config's `model.device`; ONNX Runtime runs on the CPU, so `auto` with it means the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() and engine != ONNXRUNTIME else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"model.device is {device!r} but no CUDA device is available")
    if resolved.type == "cuda" and engine == ONNXRUNTIME:
        raise ModelLoadError(
            "model.runtime 'onnxruntime' runs on the CPU: set model.device to 'cpu' or 'auto'"
        )
    return resolved


def resolve_runtime(*, device: str, precision: str) -> Runtime:
    """A torch runtime with the config's `auto` choices made by rule, without measuring: fp16 on
    CUDA; on a CPU, bf16 autocast where the CPU has native bf16 instructions, else fp32. The daemon
    and the commands go through model.engine_choice instead, which measures on a CPU."""
    resolved = resolve_device(device, engine=TORCH)
    if precision == "auto":
        # fp16 halves memory traffic on a GPU. CPUs lack fast fp16 kernels.
        if resolved.type == "cuda":
            precision = "fp16"
        else:
            precision = "bf16" if cpu_has_fast_bf16() else "fp32"
    return Runtime(device=resolved, precision=precision)


def cpu_candidates(*, engine: str, precision: str, fast_bf16: bool) -> list[Runtime]:
    """The CPU runtimes the config allows (`auto` widens either choice), torch fp32 first: it is
    the reference the others are checked against. bf16 on a CPU without native bf16 is emulated,
    several times slower: `auto` leaves it out there, as it does fp16 (no fast CPU kernels)."""
    cpu = torch.device("cpu")
    candidates = []
    for name, precisions in CPU_PRECISIONS.items():
        if engine not in ("auto", name):
            continue
        for kind in precisions:
            if precision == kind or (precision == "auto" and (kind != "bf16" or fast_bf16)):
                candidates.append(Runtime(device=cpu, precision=kind, engine=name))
    return candidates
