"""CLIP's image tower on a CPU: torch or ONNX Runtime (fp32, int8), chosen by the fidelity gate
and measured speed, exported and measured once, cached in the registry's .engines/ folder.

The tiny random-weight CLIP stands in for the pretrained one (no downloads here); the export, the
quantisation and ONNX Runtime are the real ones. On the tiny model which engine is fastest is
noise, so tests force the engine where they need one, and check the rule (fastest that passes)
against the evidence file where `auto` chooses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import model.engine_choice as engine_choice
from model.clip_features import ClipFeatureExtractor
from model.engine_choice import GATE_COSINE, Engines, load_engines
from model.feature_cache import FeatureCache
from model.onnx_vision import OnnxVision
from model.registry import current_version
from model.synthetic import make_labelled_folder, random_image, write_bmp
from tests.helpers import mount_tmpfs, query
from watcher.commands.main import main


@pytest.fixture
def no_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """The candidates of `auto` as on a CPU without native bf16 (the set differs by one otherwise)."""
    monkeypatch.setattr(engine_choice, "cpu_has_fast_bf16", lambda: False)


pytestmark = pytest.mark.usefixtures("no_native_bf16")


def _load(clip: Path, cache: Path, *, engine: str = "auto", precision: str = "auto") -> Engines:
    return load_engines(str(clip), device="cpu", engine=engine, precision=precision, cache_root=cache)


def _evidence(cache: Path) -> dict[str, Any]:
    files = list((cache / ".engines").glob("*/evidence-*.json"))
    assert len(files) == 1, files
    document: dict[str, Any] = json.loads(files[0].read_text(encoding="utf-8"))
    return document


def test_auto_exports_gates_measures_and_runs_the_fastest_that_passed(
    tiny_clip: Path, tmp_path: Path
) -> None:
    engines = _load(tiny_clip, tmp_path)

    folder = next((tmp_path / ".engines").iterdir())
    assert {path.name for path in folder.glob("*.onnx")} == {"image-tower-fp32.onnx", "image-tower-int8.onnx"}
    measured = _evidence(tmp_path)["engines"]
    assert set(measured) == {"torch-fp32", "onnxruntime-fp32", "onnxruntime-int8"}  # no native bf16 assumed
    passed = {tag: entry for tag, entry in measured.items() if entry["min_cosine"] >= GATE_COSINE}
    assert set(engines.passing) == set(passed)
    fastest = max(passed, key=lambda tag: passed[tag]["frames_per_second"])
    assert engines.chosen.runtime.tag == fastest


def test_a_later_start_reads_the_cache_and_measures_nothing(
    tiny_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _load(tiny_clip, tmp_path).chosen.runtime.tag
    evidence = next((tmp_path / ".engines").glob("*/evidence-*.json"))
    written = evidence.stat().st_mtime_ns

    def never(*_: object, **__: object) -> None:
        raise AssertionError("exported or measured again")

    monkeypatch.setattr(engine_choice, "export_image_tower", never)
    monkeypatch.setattr(engine_choice, "quantize_int8", never)
    monkeypatch.setattr(engine_choice, "measure", never)

    assert _load(tiny_clip, tmp_path).chosen.runtime.tag == first
    assert evidence.stat().st_mtime_ns == written


def test_onnxruntime_int8_features_stay_within_the_gate_of_torch_fp32(
    tiny_clip: Path, tmp_path: Path
) -> None:
    engines = _load(tiny_clip, tmp_path, engine="onnxruntime", precision="int8")
    reference = _load(tiny_clip, tmp_path, engine="torch", precision="fp32").chosen
    assert engines.chosen.runtime.tag == "onnxruntime-int8"
    frames = [np.asarray(random_image(width=160, height=120, seed=seed)) for seed in range(8)]

    cosines = np.sum(engines.chosen.image_features(frames) * reference.image_features(frames), axis=1)

    assert cosines.min() >= GATE_COSINE


@pytest.fixture(scope="module")
def int8_engines(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[ClipFeatureExtractor, ClipFeatureExtractor]:
    """ONNX Runtime int8 and torch fp32 on one tiny CLIP of this module's own (hypothesis runs many
    examples: loaded once)."""
    from model.synthetic import build_clip_checkpoint

    root = tmp_path_factory.mktemp("engines")
    clip = build_clip_checkpoint(root / "clip")
    int8 = load_engines(str(clip), device="cpu", engine="onnxruntime", precision="int8", cache_root=root)
    torch_fp32 = load_engines(str(clip), device="cpu", engine="torch", precision="fp32", cache_root=root)
    return int8.chosen, torch_fp32.chosen


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(
        st.tuples(st.integers(min_value=1, max_value=300), st.integers(min_value=1, max_value=300)),
        min_size=1,
        max_size=6,
    ),
    seed=st.integers(min_value=0, max_value=2**16),
    threads=st.sampled_from([1, 2]),
)
def test_any_batch_of_any_frame_sizes_runs_on_int8_as_on_torch(
    int8_engines: tuple[ClipFeatureExtractor, ClipFeatureExtractor],
    sizes: list[tuple[int, int]],
    seed: int,
    threads: int,
) -> None:
    int8, reference = int8_engines
    frames = [np.asarray(random_image(width=w, height=h, seed=seed + i)) for i, (w, h) in enumerate(sizes)]
    int8.use_cpu_threads(threads)

    features = int8.image_features(frames)

    assert features.shape == (len(frames), reference.feature_size) and features.dtype == np.float32
    assert np.allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    assert np.sum(features * reference.image_features(frames), axis=1).min() >= GATE_COSINE


@pytest.mark.parametrize("engine", ["auto", "onnxruntime"])
def test_a_failed_export_falls_back_to_torch_with_one_warning(
    tiny_clip: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    engine: str,
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("exporter exploded\nsecond line of a long story")

    monkeypatch.setattr(engine_choice, "export_image_tower", broken)

    with caplog.at_level(logging.WARNING, logger="model.engine_choice"):
        engines = _load(tiny_clip, tmp_path, engine=engine, precision="fp32")

    assert engines.chosen.runtime.tag == "torch-fp32"
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert warnings == ["onnxruntime-fp32 left out: the export failed: RuntimeError: exporter exploded"]


def test_an_engine_under_the_gate_is_never_chosen(
    tiny_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Garbled(OnnxVision):
        """int8 whose features point anywhere: what a broken quantisation would give."""

        def run(self, pixels: np.ndarray, *, threads: int) -> np.ndarray:
            features = super().run(pixels, threads=threads)
            if "int8" in self.path.name:
                return np.random.default_rng(0).normal(size=features.shape).astype(np.float32)
            return features

    monkeypatch.setattr(engine_choice, "OnnxVision", Garbled)

    with caplog.at_level(logging.WARNING, logger="model.engine_choice"):
        engines = _load(tiny_clip, tmp_path, engine="onnxruntime")

    assert engines.chosen.runtime.tag == "onnxruntime-fp32"
    assert "onnxruntime-int8" not in engines.passing
    entry = _evidence(tmp_path)["engines"]["onnxruntime-int8"]
    assert entry["min_cosine"] < GATE_COSINE and entry["frames_per_second"] is None
    assert any(
        "onnxruntime-int8 left out: its features are within cosine" in r.getMessage() for r in caplog.records
    )


def test_a_damaged_export_is_made_again(tiny_clip: Path, tmp_path: Path) -> None:
    _load(tiny_clip, tmp_path, engine="onnxruntime", precision="int8")
    exported = next((tmp_path / ".engines").glob("*/image-tower-int8.onnx"))
    exported.write_bytes(b"half a file")  # a disk that filled up, a copy cut short
    for evidence in (tmp_path / ".engines").glob("*/evidence-*.json"):
        evidence.unlink()

    engines = _load(tiny_clip, tmp_path, engine="onnxruntime", precision="int8")

    assert engines.chosen.runtime.tag == "onnxruntime-int8"
    assert exported.stat().st_size > 1000


def _scramble_weights(exported: Path) -> None:
    """The export's matrices replaced by noise: a file that still loads, of another model."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(exported)
    rng = np.random.default_rng(0)
    for tensor in graph.graph.initializer:
        if len(tensor.dims) >= 2:
            noise = rng.normal(size=tuple(tensor.dims)).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(noise, tensor.name))
    onnx.save(graph, exported)


def _another_frame_size(exported: Path) -> None:
    """An export that takes 64-pixel frames, as another model's would: it loads, then fails to run."""
    import onnx

    graph = onnx.load(exported)
    for axis in (2, 3):
        graph.graph.input[0].type.tensor_type.shape.dim[axis].dim_value = 64
    onnx.save(graph, exported)


@pytest.mark.parametrize("change", [_scramble_weights, _another_frame_size], ids=["weights", "frame_size"])
def test_a_cached_export_changed_since_it_passed_is_not_run(
    tiny_clip: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, change: Callable[[Path], None]
) -> None:
    _load(tiny_clip, tmp_path, engine="onnxruntime", precision="fp32")
    exported = next((tmp_path / ".engines").glob("*/image-tower-fp32.onnx"))
    change(exported)  # the evidence still says it passed

    with caplog.at_level(logging.WARNING):
        engines = _load(tiny_clip, tmp_path, engine="onnxruntime", precision="fp32")

    # Told by the digest recorded when it was made (no torch pass at each start: 340 MiB of peak
    # RSS with ViT-B/32), and made again at once.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"{exported} will not load (ValueError: changed on disk since it was made (its SHA-256 is "
        "another)): exporting it again"
    ]
    assert engines.chosen.runtime.tag == "onnxruntime-fp32"
    assert (exported.parent / f".{exported.name}.sha256").read_text().strip() == hashlib.sha256(
        exported.read_bytes()
    ).hexdigest()


def test_a_cached_export_made_before_digests_were_recorded_is_taken_as_it_is(
    tiny_clip: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _load(tiny_clip, tmp_path, engine="onnxruntime", precision="fp32")
    exported = next((tmp_path / ".engines").glob("*/image-tower-fp32.onnx"))
    record = exported.parent / f".{exported.name}.sha256"
    record.unlink()
    made = exported.stat().st_mtime_ns

    with caplog.at_level(logging.WARNING):
        engines = _load(tiny_clip, tmp_path, engine="onnxruntime", precision="fp32")

    assert engines.chosen.runtime.tag == "onnxruntime-fp32"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert exported.stat().st_mtime_ns == made  # not made again
    assert record.read_text().strip() == hashlib.sha256(exported.read_bytes()).hexdigest()


def test_damaged_evidence_is_measured_again(tiny_clip: Path, tmp_path: Path) -> None:
    _load(tiny_clip, tmp_path, engine="onnxruntime")
    evidence = next((tmp_path / ".engines").glob("*/evidence-*.json"))
    evidence.write_text("{ not json", encoding="utf-8")

    engines = _load(tiny_clip, tmp_path, engine="onnxruntime")

    assert set(json.loads(evidence.read_text(encoding="utf-8"))["engines"]) == set(engines.passing)


def test_an_unusable_engine_cache_runs_torch_fp32(tiny_clip: Path, tmp_path: Path) -> None:
    registry = tmp_path / "models"
    registry.write_text("a file where the registry should be", encoding="utf-8")

    engines = _load(tiny_clip, registry)

    assert engines.chosen.runtime.tag == "torch-fp32"


def test_daemons_starting_together_export_once(
    tiny_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exports: list[Path] = []
    original = engine_choice.export_image_tower

    def counted(model: Any, path: Path, **kwargs: Any) -> None:
        exports.append(path)
        original(model, path, **kwargs)

    monkeypatch.setattr(engine_choice, "export_image_tower", counted)
    chosen: list[str] = []
    starts = [
        threading.Thread(target=lambda: chosen.append(_load(tiny_clip, tmp_path).chosen.runtime.tag))
        for _ in range(3)
    ]
    for start in starts:
        start.start()
    for start in starts:
        start.join(timeout=120)

    assert len(exports) == 1 and len(chosen) == 3 and len(set(chosen)) == 1


def test_a_quantisation_on_a_full_disk_leaves_no_file_behind(tiny_clip: Path, tmp_path: Path) -> None:
    """Room for the fp32 export (0.5 MB here), not for the quantiser's shape-inferred copy of it."""
    registry = tmp_path / "models"
    mount_tmpfs(registry, size="600k")
    try:
        engines = _load(tiny_clip, registry, engine="onnxruntime", precision="int8")

        assert engines.chosen.runtime.tag == "torch-fp32"
        folder = next((registry / ".engines").iterdir())
        assert sorted(path.name for path in folder.iterdir()) == [
            ".image-tower-fp32.onnx.sha256",
            ".lock",
            "image-tower-fp32.onnx",
        ]
    finally:
        subprocess.run(["umount", "-l", str(registry)], check=False)


def test_the_feature_cache_keeps_each_engine_apart(tmp_path: Path) -> None:
    def cache(engine: str) -> FeatureCache:
        return FeatureCache(tmp_path, clip_model="clip-sha256:x", preprocessing_version="p/1", engine=engine)

    cache("torch-fp32").put("ab" * 32, np.ones(4, dtype=np.float32))

    assert cache("onnxruntime-int8").get("ab" * 32) is None
    assert cache("torch-fp32").get("ab" * 32) is not None


CANNOT_RUN = {
    "torch-int8": ({"runtime": "torch", "precision": "int8"}, "model.precision: int8 runs on ONNX Runtime"),
    "ort-bf16": ({"runtime": "onnxruntime", "precision": "bf16"}, "model.precision: ONNX Runtime runs fp32"),
    "ort-cuda": ({"runtime": "onnxruntime", "device": "cuda"}, "model.runtime: ONNX Runtime runs on the CPU"),
    "int8-cuda": ({"precision": "int8", "device": "cuda:0"}, "model.precision: int8 runs on the CPU"),
    "unknown": ({"runtime": "tensorrt"}, "model.runtime: Input should be"),
}


@pytest.mark.parametrize(("model", "expected"), list(CANNOT_RUN.values()), ids=list(CANNOT_RUN))
def test_a_runtime_that_cannot_run_the_precision_stops_startup_naming_the_key(
    make_config: Callable[..., Path], capsys: pytest.CaptureFixture[str], model: dict[str, str], expected: str
) -> None:
    config = make_config(model=model)

    assert main(["watch", "--once", "--config", str(config)]) == 2

    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("runtime", "precision"), [("onnxruntime", "int8"), ("onnxruntime", "fp32"), ("torch", "fp32")]
)
def test_rows_record_the_precision_and_engine_that_computed_them(
    make_config: Callable[..., Path], tmp_path: Path, runtime: str, precision: str
) -> None:
    config = make_config(model={"runtime": runtime, "precision": precision})
    write_bmp(tmp_path / "inbox" / "frame.bmp", width=64, height=48, seed=3)

    assert main(["watch", "--once", "--config", str(config)]) == 0

    rows = query(
        tmp_path / "data" / "results.sqlite3", "SELECT status, precision, embedding_model FROM results"
    )
    assert len(rows) == 1 and rows[0][:2] == ("ok", precision)
    assert rows[0][2].endswith(f" {runtime}-{precision}")


def test_rescore_takes_every_engines_embeddings_of_the_same_clip(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Decided: a head serves features of any engine that passed the gate (cosine 0.99 of torch
    fp32; stored embeddings are float16 anyway), so `rescore` relabels int8 rows with a head trained
    on torch fp32 features. Another CLIP's embeddings are still left alone."""
    labelled = make_labelled_folder(tmp_path / "labelled", per_class=20)
    int8 = make_config(model={"runtime": "onnxruntime", "precision": "int8"})
    for index in range(4):
        write_bmp(tmp_path / "inbox" / f"{index}.bmp", width=64, height=48, seed=index)
    assert main(["watch", "--once", "--config", str(int8)]) == 0
    database = tmp_path / "data" / "results.sqlite3"
    with sqlite3.connect(database) as connection:
        connection.execute(
            "UPDATE results SET embedding_model = 'clip-sha256:other p/1 torch-fp32' WHERE id = 1"
        )
    torch_fp32 = make_config()  # the same files and registry, torch fp32 features for training
    assert main(["train", "--data", str(labelled), "--promote", "force", "--config", str(torch_fp32)]) == 0
    version = current_version(tmp_path / "data" / "models")
    capsys.readouterr()

    assert main(["rescore", "--since", "1h", "--config", str(torch_fp32)]) == 0

    out = capsys.readouterr().out
    assert f"rescored 3 rows with {version}" in out and "left as they were: 1 ok row" in out
    assert query(database, "SELECT id FROM results WHERE model_version = ?", version) == [(2,), (3,), (4,)]


def test_evaluate_and_train_show_the_head_on_each_engine(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labelled = make_labelled_folder(tmp_path / "labelled", per_class=20)
    config = make_config(model={"runtime": "auto", "precision": "auto"})

    assert main(["train", "--data", str(labelled), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    version = current_version(tmp_path / "data" / "models") or ""
    report = (tmp_path / "data" / "models" / version / "report.md").read_text(encoding="utf-8")
    passing = _evidence(tmp_path / "data" / "models")["engines"]
    for tag in passing:
        assert f"| {tag} |" in report and f"| {tag} |" in out

    assert main(["evaluate", "--data", str(labelled), "--config", str(config)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {version} on ")]
    assert len(rows) == len(passing) and "(serving)" in rows[0]
    accuracies = [float(row.split("|")[2]) for row in rows]
    assert max(accuracies) - min(accuracies) <= 0.1  # the same frames, near-equal features


def test_a_cached_start_loads_only_the_chosen_engine_and_lets_torchs_image_tower_go(
    tiny_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _load(tiny_clip, tmp_path, engine="onnxruntime")  # measured: fp32 and int8 both in the evidence
    sessions: list[Path] = []

    class Counted(OnnxVision):
        def __init__(self, path: Path, *, threads: int) -> None:
            sessions.append(path)
            super().__init__(path, threads=threads)

    monkeypatch.setattr(engine_choice, "OnnxVision", Counted)

    chosen = engine_choice.load_clip(
        str(tiny_clip), device="cpu", engine="onnxruntime", precision="auto", cache_root=tmp_path
    )

    assert len(sessions) == 1 and chosen.runtime.tag in sessions[0].name.replace("image-tower", "onnxruntime")
    assert chosen.model.vision_model is None  # torch's copy let go: ONNX Runtime runs it
    frames = [np.asarray(random_image(seed=1))]
    assert chosen.image_features(frames).shape == (1, chosen.feature_size)
    assert chosen.text_features(["a photo of a person"]).shape == (1, chosen.feature_size)


def test_the_daemon_loads_clip_as_load_clip_does(make_config: Callable[..., Path], tmp_path: Path) -> None:
    """`watch` (and `rescore`, `backfill`) hold one engine, not every one that passed."""
    from watcher.config import load_config
    from watcher.pipeline.assembly import load_engine_set, load_extractor

    config = load_config(make_config(model={"runtime": "onnxruntime", "precision": "auto"}))
    assert len(load_engine_set(config).passing) == 2  # measured: fp32 and int8 passed

    extractor = load_extractor(config)

    assert extractor.runtime.engine == "onnxruntime" and extractor.model.vision_model is None


def test_without_onnxruntime_installed_torch_runs_with_one_warning(
    tiny_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError

    with caplog.at_level(logging.WARNING, logger="model.engine_choice"):
        engines = _load(tiny_clip, tmp_path)

    assert engines.chosen.runtime.tag == "torch-fp32"
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("ONNX Runtime left out:")


@pytest.mark.parametrize("speed", ["fast", [1, 2], True, float("nan")])
def test_evidence_with_a_wrong_type_is_measured_again(tiny_clip: Path, tmp_path: Path, speed: object) -> None:
    _load(tiny_clip, tmp_path, engine="onnxruntime")
    evidence = next((tmp_path / ".engines").glob("*/evidence-*.json"))
    document = json.loads(evidence.read_text(encoding="utf-8"))
    document["engines"]["onnxruntime-int8"]["frames_per_second"] = speed
    evidence.write_text(json.dumps(document), encoding="utf-8")

    engines = _load(tiny_clip, tmp_path, engine="onnxruntime")

    assert set(engines.passing) == {"onnxruntime-fp32", "onnxruntime-int8"}
    rewritten = json.loads(evidence.read_text(encoding="utf-8"))["engines"]["onnxruntime-int8"]
    assert isinstance(rewritten["frames_per_second"], float)


def test_an_engine_that_fails_on_the_gates_frames_is_left_out(
    tiny_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class OutOfMemory(OnnxVision):
        def run(self, pixels: np.ndarray, *, threads: int) -> np.ndarray:
            if "int8" in self.path.name:
                raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : bad_alloc")
            return super().run(pixels, threads=threads)

    monkeypatch.setattr(engine_choice, "OnnxVision", OutOfMemory)

    with caplog.at_level(logging.WARNING, logger="model.engine_evidence"):
        engines = _load(tiny_clip, tmp_path, engine="onnxruntime")

    assert engines.chosen.runtime.tag == "onnxruntime-fp32"
    assert any(
        "onnxruntime-int8 left out: it failed on the gate's frames" in r.getMessage() for r in caplog.records
    )


def test_evidence_that_cannot_be_kept_still_chooses_what_was_measured(
    tiny_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(engine_choice, "write_evidence", disk_full)

    engines = _load(tiny_clip, tmp_path, engine="onnxruntime", precision="int8")

    assert engines.chosen.runtime.tag == "onnxruntime-int8"


def test_an_export_cut_short_by_a_kill_leaves_no_file_for_ever(tmp_path: Path, tiny_clip: Path) -> None:
    """A start killed mid-export (systemd's start timeout) left its staging file, the export's
    size; the next export removes those of processes that are gone, and keeps a live one's."""
    from transformers import CLIPModel

    from model.onnx_vision import export_image_tower

    path = tmp_path / "image-tower-fp32.onnx"
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead_ones = tmp_path / f".{path.name}.{ended.stdout.strip()}.tmp"
        live_ones = tmp_path / f".{path.name}.{alive.pid}.tmp"
        recent = tmp_path / f".{path.name}.999999999.tmp"  # its writer in another container, say
        for staging in (dead_ones, live_ones, recent):
            staging.write_bytes(b"half an export")
        for staging in (dead_ones, live_ones):
            os.utime(staging, (time.time() - 3600, time.time() - 3600))
        export_image_tower(CLIPModel.from_pretrained(tiny_clip), path, image_size=(224, 224))
    finally:
        alive.kill()
        alive.wait()

    assert path.is_file()
    made = [path.name, f".{path.name}.sha256"]
    assert sorted(item.name for item in tmp_path.iterdir()) == sorted([*made, live_ones.name, recent.name])
