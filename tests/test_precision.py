"""CLIP's numeric precision: bf16 autocast on CPUs that have it, recorded with every row."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from model.runtime import cpu_has_fast_bf16, resolve_runtime
from model.synthetic import write_bmp
from tests.helpers import feature_cosines, query
from watcher.commands.main import main


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        pytest.param("flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile", True, id="avx512_bf16"),
        pytest.param("flags\t\t: fpu sse2 avx2 amx_bf16", True, id="amx"),
        pytest.param("flags\t\t: fpu sse2 avx2 avx512f", False, id="no_bf16"),
    ],
)
def test_fast_bf16_is_read_from_the_cpu_flags(tmp_path: Path, flags: str, expected: bool) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\n{flags}\n")
    assert cpu_has_fast_bf16(cpuinfo) is expected


def test_auto_precision_on_cpu_follows_the_hardware() -> None:
    runtime = resolve_runtime(device="cpu", precision="auto")
    assert runtime.precision == ("bf16" if cpu_has_fast_bf16() else "fp32")
    if runtime.precision == "bf16":
        assert str(runtime.dtype) == "torch.float32" and str(runtime.autocast_dtype) == "torch.bfloat16"


def test_bf16_features_match_fp32_within_tolerance(tiny_clip: Path) -> None:
    cosine = feature_cosines(tiny_clip, reference=("cpu", "fp32"), candidate=("cpu", "bf16"))
    # The stated tolerance: bf16 features stay within cosine 0.99 of the fp32 reference.
    assert cosine.min() > 0.99, cosine


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_each_row_records_its_precision(
    make_config: Callable[..., Path], tmp_path: Path, precision: str
) -> None:
    config = make_config(model={"precision": precision})
    write_bmp(tmp_path / "inbox" / "x.bmp")
    (tmp_path / "inbox" / "bad.bmp").write_bytes(b"not an image at all")

    assert main(["watch", "--once", "--config", str(config)]) == 0

    rows = query(
        tmp_path / "data" / "results.sqlite3", "SELECT status, precision FROM results ORDER BY status"
    )
    assert rows == [("failed", None), ("ok", precision)]
