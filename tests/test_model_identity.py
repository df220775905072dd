"""Heads know their CLIP model by content: a moved or copied folder keeps them, another model is
refused; `model fetch` saves a loadable folder; a Hub id without network fails at once."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from model.clip_features import PREPROCESSING_VERSION, ClipFeatureExtractor
from model.identity import CACHE_FILE, ORIGIN_FILE, content_sha256, identify_clip
from model.keras_head import build_head_model
from model.registry import HeadMetadata, register_head, set_current
from model.runtime import resolve_runtime
from model.synthetic import build_clip_checkpoint, random_image, write_bmp
from tests.helpers import files_under, query
from watcher.commands.main import main


def _register(registry: Path, *, version: str, clip_model: str, clip_identity: dict[str, str]) -> None:
    metadata = HeadMetadata(
        version=version,
        clip_model=clip_model,
        clip_identity=clip_identity,
        feature_size=16,
        preprocessing_version=PREPROCESSING_VERSION,
    )
    register_head(registry, build_head_model(16), metadata)
    set_current(registry, version)


def _watch_once(config: Path, inbox: Path) -> int:
    write_bmp(inbox / "x.bmp")
    return main(["watch", "--once", "--config", str(config)])


def test_a_copied_clip_folder_keeps_its_head_and_another_clip_is_refused(
    make_config: Callable[..., Path], tmp_path: Path, tiny_clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trained_on = identify_clip(str(tiny_clip))
    _register(
        tmp_path / "data" / "models",
        version="v1",
        clip_model=trained_on.name,
        clip_identity=trained_on.recorded(),
    )
    copy = shutil.copytree(tiny_clip, tmp_path / "elsewhere" / "renamed-clip")

    assert _watch_once(make_config(model={"clip": str(copy)}), tmp_path / "inbox") == 0
    assert query(tmp_path / "data" / "results.sqlite3", "SELECT status, model_version FROM results") == [
        ("ok", "v1")
    ]

    other = build_clip_checkpoint(tmp_path / "other" / tiny_clip.name, seed=1)  # same name, other weights
    capsys.readouterr()
    assert _watch_once(make_config(model={"clip": str(other)}), tmp_path / "inbox") == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(
        f"cctv-gender: error: head v1 refused: it was trained on CLIP '{tiny_clip.name}' (content "
    )
    assert f"the daemon runs '{tiny_clip.name}' (content " in error


def test_a_head_that_recorded_a_path_loads_while_the_content_there_matches(
    make_config: Callable[..., Path], tmp_path: Path, tiny_clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Registered before identities: only the folder's path was recorded.
    _register(tmp_path / "data" / "models", version="old", clip_model=str(tiny_clip), clip_identity={})
    copy = shutil.copytree(tiny_clip, tmp_path / "moved-clip")
    assert _watch_once(make_config(model={"clip": str(copy)}), tmp_path / "inbox") == 0

    other = build_clip_checkpoint(tmp_path / "other-clip", seed=2)
    capsys.readouterr()
    assert _watch_once(make_config(model={"clip": str(other)}), tmp_path / "inbox") == 1
    assert f"refused: it was trained on CLIP '{tiny_clip}'" in capsys.readouterr().err


def _cut_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a copy cut short


def _processor_settings(**changes: object) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        settings = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
        (folder / "preprocessor_config.json").write_text(json.dumps(settings | changes), encoding="utf-8")

    return change


def _drop_a_tensor(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    del weights["vision_model.encoder.layers.1.mlp.fc1.weight"]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def _drop_the_tokenizer(folder: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        (folder / name).unlink(missing_ok=True)


BROKEN_FOLDERS: dict[str, tuple[Callable[[Path], object], str]] = {
    "no_config": (lambda folder: (folder / "config.json").unlink(), "the folder has no config.json"),
    # Without the file's sizes transformers builds ViT-B/32, then refuses the tiny weights.
    "config_of_no_model": (
        lambda folder: (folder / "config.json").write_text("{}"),
        "its weights do not have the shapes its config.json describes",
    ),
    "weights_cut_short": (_cut_weights, "its weights (*.safetensors) cannot be read: "),
    "weights_empty": (
        lambda folder: (folder / "model.safetensors").write_bytes(b""),
        "its weights (*.safetensors) cannot be read: ",
    ),
    # transformers would initialise the tensor at random, and make a tokenizer of special tokens.
    "weights_missing_a_tensor": (
        _drop_a_tensor,
        "its weights lack vision_model.encoder.layers.1.mlp.fc1.weight",
    ),
    "no_tokenizer_files": (_drop_the_tokenizer, "its tokenizer has no vocabulary"),
    "processor_of_another_size": (
        _processor_settings(crop_size={"height": 96, "width": 96}),
        "its image processor makes 96x96 pixels, its vision model takes 224x224",
    ),
    # Each frame resized by its shortest edge and not cropped: a 4:3 frame is 298x224 pixels.
    "processor_not_cropping": (
        _processor_settings(do_center_crop=False),
        "its image processor makes pixels of each frame's own shape",
    ),
}


@pytest.mark.parametrize(("damage", "reason"), list(BROKEN_FOLDERS.values()), ids=list(BROKEN_FOLDERS))
def test_a_broken_clip_folder_stops_startup_with_one_line(
    make_config: Callable[..., Path],
    tmp_path: Path,
    tiny_clip: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[Path], object],
    reason: str,
) -> None:
    folder = shutil.copytree(tiny_clip, tmp_path / "clip")
    damage(folder)

    assert _watch_once(make_config(model={"clip": str(folder)}), tmp_path / "inbox") == 1

    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(f"cctv-gender: error: cannot load CLIP model '{folder}': {reason}")
    )
    assert files_under(tmp_path / "inbox") == ["x.bmp"]


NOT_FOLDERS: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "weights_file": (lambda _, clip: clip / "model.safetensors", "that is a file, not a folder"),
    "mistyped_folder": (lambda root, _: root / "clip-vit-b32", "there is no folder at that path (No such"),
    "symlink_loop": (
        lambda root, _: _linked(root / "loop", root / "loop"),
        "there is no folder at that path (Too many levels of symbolic links)",
    ),
}


def _linked(link: Path, target: Path) -> Path:
    link.symlink_to(target)
    return link


@pytest.mark.parametrize(("path", "reason"), list(NOT_FOLDERS.values()), ids=list(NOT_FOLDERS))
def test_a_clip_path_that_is_no_folder_is_said_so_not_sent_to_the_hub(
    make_config: Callable[..., Path],
    tmp_path: Path,
    tiny_clip: Path,
    capsys: pytest.CaptureFixture[str],
    path: Callable[[Path, Path], Path],
    reason: str,
) -> None:
    source = path(tmp_path, tiny_clip)
    config = make_config(model={"clip": str(source)})

    assert _watch_once(config, tmp_path / "inbox") == 1
    assert main(["models", "fetch", str(source), "--to", str(tmp_path / "to"), "--config", str(config)]) == 1

    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2].startswith(f"cctv-gender: error: cannot load CLIP model '{source}': {reason}"), err
    assert err[-1].startswith(f"cctv-gender: error: cannot fetch '{source}': {reason}"), err
    assert not any("Hub" in line or "Traceback" in line for line in err)


def test_zero_shot_is_named_after_the_model_not_its_path(
    make_config: Callable[..., Path], tmp_path: Path, tiny_clip: Path
) -> None:
    assert _watch_once(make_config(), tmp_path / "inbox") == 0
    assert query(tmp_path / "data" / "results.sqlite3", "SELECT model_version FROM results") == [
        (f"zero-shot:{tiny_clip.name}",)
    ]


def test_the_content_hash_is_cached_and_follows_the_files(tmp_path: Path, tiny_clip: Path) -> None:
    folder = shutil.copytree(tiny_clip, tmp_path / "clip")
    digest = content_sha256(folder)
    assert (folder / CACHE_FILE).is_file()
    assert content_sha256(folder) == digest == content_sha256(tiny_clip)
    config = folder / "config.json"
    config.write_text(config.read_text() + " ")
    assert content_sha256(folder) != digest  # size and modification time changed: hashed anew


def _features(folder: Path) -> np.ndarray:
    extractor = ClipFeatureExtractor(str(folder), runtime=resolve_runtime(device="cpu", precision="fp32"))
    return extractor.image_features([random_image(seed=5)])


def test_model_fetch_saves_a_folder_that_loads(
    make_config: Callable[..., Path], tmp_path: Path, tiny_clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "fetched"
    # from_pretrained takes a folder as well as a Hub id: no network needed here.
    assert main(["models", "fetch", str(tiny_clip), "--to", str(target), "--config", str(make_config())]) == 0
    assert f"saved {tiny_clip} into {target}" in capsys.readouterr().out
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer_config.json"):
        assert (target / name).is_file(), name
        # Readable as the umask allows (the service user reads a folder another user fetched).
        assert (target / name).stat().st_mode & 0o777 == 0o666 & ~_umask(), name
    np.testing.assert_allclose(_features(target), _features(tiny_clip), atol=1e-6)


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A machine without network access and an empty Hub cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))


@pytest.mark.usefixtures("no_hub")
def test_a_hub_id_without_network_fails_at_once_saying_what_to_run(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(model={"clip": "openai/clip-vit-base-patch32"})
    started = time.monotonic()
    assert _watch_once(config, tmp_path / "inbox") == 1
    assert time.monotonic() - started < 20  # not 38 s of retries
    err = capsys.readouterr().err.strip().splitlines()
    assert not [line for line in err if "Retry" in line or "huggingface_hub" in line]
    assert err[-1].startswith("cctv-gender: error: cannot load CLIP model 'openai/clip-vit-base-patch32': ")
    assert "Hub cannot be reached" in err[-1]
    assert "run `cctv-gender model fetch openai/clip-vit-base-patch32 --to DIR`" in err[-1]


@pytest.mark.usefixtures("no_hub")
def test_model_fetch_without_network_is_one_line(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "fetch", "--to", str(tmp_path / "clip"), "--config", str(make_config())]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "cctv-gender: error: cannot fetch 'openai/clip-vit-base-patch32': the Hugging Face Hub cannot be "
        "reached from this machine; run this on a machine with network access and copy the folder over"
    ]


def test_the_hub_library_logs_through_our_handlers_only(tiny_clip: Path) -> None:
    _features(tiny_clip)
    assert logging.getLogger("huggingface_hub").handlers == []


def test_a_fetched_folder_remembers_its_hub_origin(tmp_path: Path, tiny_clip: Path) -> None:
    folder = shutil.copytree(tiny_clip, tmp_path / "clip-vit-base-patch32")
    (folder / ORIGIN_FILE).write_text('{"hub_id": "openai/clip-vit-base-patch32", "revision": "abc"}')
    identity = identify_clip(str(folder))
    assert (identity.name, identity.hub_id, identity.revision) == (
        "clip-vit-base-patch32",
        "openai/clip-vit-base-patch32",
        "abc",
    )


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
