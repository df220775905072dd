"""Where and in what precision CLIP runs: the config's `auto` choices made concrete."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class ModelLoadError(Exception):
    """The configured CLIP model cannot be loaded; the message says which and why."""


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    # What the model computes in: "fp32", "fp16" or "bf16".
    precision: str

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype. bf16 on a CPU keeps fp32 weights and runs under autocast."""
        if self.device.type == "cpu" and self.precision == "bf16":
            return torch.float32
        return _DTYPES[self.precision]

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.device.type == "cpu" and self.precision == "bf16" else None


def cpu_has_fast_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """AVX512-BF16 or AMX: the CPU multiplies bf16 natively."""
    try:
        flags = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_runtime(*, device: str, precision: str) -> Runtime:
    """Turn the config's `auto` choices into a concrete device and precision."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"model.device is {device!r} but no CUDA device is available")
    if precision == "auto":
        # fp16 halves memory traffic on a GPU. CPUs lack fast fp16 kernels; bf16 autocast pays
        # where the CPU has native bf16 instructions, fp32 elsewhere.
        if resolved.type == "cuda":
            precision = "fp16"
        else:
            precision = "bf16" if cpu_has_fast_bf16() else "fp32"
    return Runtime(device=resolved, precision=precision)
