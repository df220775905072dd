"""Which CLIP model a head was trained on, by content rather than by where its folder lies.

A model's identity is a sha256 over the files that decide its features (`config.json`, the image
processor's settings and the weights), plus the Hub id and revision when it came from the Hub
(straight from the Hub cache, or through `cctv-gender model fetch`, which records them in
`ORIGIN_FILE`). Moving, copying or renaming a model folder keeps its identity, so every head
trained on it stays valid; a different model is told apart even under the same folder name.

Hashing the weights of ViT-B/32 (600 MB) takes a second or two; the digest is cached beside the
files (`CACHE_FILE`, keyed by each file's size and modification time) and in the process, so it is
paid once per copy of a model. No torch here: `models promote` judges heads without loading CLIP.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

# Written by `cctv-gender model fetch` into the folder it saves: where the model came from.
ORIGIN_FILE = "cctv-gender-origin.json"
# The cached digest, beside the files it covers (best effort: a read-only folder is hashed anew).
CACHE_FILE = ".cctv-gender-identity.json"
# What decides the features: the model's architecture and weights, and the processor's settings.
_DESCRIBING_FILES = ("config.json", "preprocessor_config.json")
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
_CHUNK = 8 * 1024 * 1024

_memory: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


@dataclass(frozen=True)
class ClipIdentity:
    """`name` is what people call it (the folder's name or the Hub id); `source` is where it was
    loaded from this time (never recorded); the rest identify its content."""

    name: str
    source: str
    sha256: str | None = None
    hub_id: str | None = None
    revision: str | None = None

    @property
    def key(self) -> str:
        """A short stable string for the content (feature caches, stored embeddings): the same for
        every copy of the model, wherever it lies."""
        if self.sha256:
            return f"clip-sha256:{self.sha256[:16]}"
        return self.name

    def recorded(self) -> dict[str, str]:
        """What a head's metadata keeps (beside `name`): the content fields that are known."""
        fields = {"sha256": self.sha256, "hub_id": self.hub_id, "revision": self.revision}
        return {name: value for name, value in fields.items() if value}

    def describe(self) -> str:
        return f"{self.name!r} (content {self.sha256[:12]})" if self.sha256 else repr(self.name)


def recorded_identity(name: str, recorded: dict[str, str]) -> ClipIdentity:
    """The identity a head's metadata recorded. Heads registered before identities were recorded
    hold only a path (or a Hub id): their content is that path's, if it is still there."""
    if not recorded.get("sha256") and Path(name).is_dir():
        found = identify_clip(name)
        return ClipIdentity(name=name, source=name, sha256=found.sha256)
    return ClipIdentity(
        name=name,
        source=name,
        sha256=recorded.get("sha256"),
        hub_id=recorded.get("hub_id"),
        revision=recorded.get("revision"),
    )


def same_model(recorded: ClipIdentity, serving: ClipIdentity) -> bool:
    """Whether features of `serving` are those a head trained on `recorded` expects."""
    if recorded.sha256 and serving.sha256:
        if recorded.sha256 == serving.sha256:
            return True
        # The Hub's files and a `model fetch` copy of them differ byte for byte (save_pretrained
        # writes them anew) but hold the same model.
        return bool(recorded.hub_id and recorded.revision) and (
            (recorded.hub_id, recorded.revision) == (serving.hub_id, serving.revision)
        )
    # One side's content is unknown (a Hub id not cached here, a recorded path gone): names decide.
    return recorded.name in (serving.name, serving.source)


def identify_clip(source: str) -> ClipIdentity:
    """The identity of `model.clip`: a folder, or a Hub id (its files in the Hub cache, when
    there). Never uses the network; a Hub id not cached is known by its name only."""
    folder = Path(source)
    if folder.is_dir():
        origin = _read_origin(folder)
        return ClipIdentity(
            name=folder.resolve().name,
            source=source,
            # A folder with no model in it has no content to compare (its load fails anyway).
            sha256=content_sha256(folder) if (folder / "config.json").is_file() else None,
            hub_id=origin.get("hub_id"),
            revision=origin.get("revision"),
        )
    snapshot = _hub_snapshot(source)
    if snapshot is None:
        return ClipIdentity(name=source, source=source, hub_id=source)
    # The Hub cache keeps each revision in snapshots/<commit hash>/.
    return ClipIdentity(
        name=source, source=source, sha256=content_sha256(snapshot), hub_id=source, revision=snapshot.name
    )


def write_origin(folder: Path, *, hub_id: str, revision: str | None) -> None:
    data = {"hub_id": hub_id, **({"revision": revision} if revision else {})}
    (folder / ORIGIN_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def content_sha256(folder: Path) -> str:
    """sha256 over the describing files and the weights (names, sizes and bytes), cached."""
    files = _content_files(folder)
    stamp = tuple((path.name, stat.st_size, stat.st_mtime_ns) for path, stat in files)
    memory_key = (str(folder.resolve()), stamp)
    if memory_key in _memory:
        return _memory[memory_key]
    digest = _cached_digest(folder, stamp)
    if digest is None:
        digest = _hash_files([path for path, _ in files])
        _save_digest(folder, stamp, digest)
    _memory[memory_key] = digest
    return digest


def _content_files(folder: Path) -> list[tuple[Path, os.stat_result]]:
    names = {name for name in _DESCRIBING_FILES if (folder / name).is_file()}
    for pattern in _WEIGHT_PATTERNS:
        names.update(path.name for path in folder.glob(pattern) if path.is_file())
    return [(folder / name, (folder / name).stat()) for name in sorted(names)]


def _hash_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as file:
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _cached_digest(folder: Path, stamp: tuple[tuple[str, int, int], ...]) -> str | None:
    try:
        cached = json.loads((folder / CACHE_FILE).read_text(encoding="utf-8"))
        if [tuple(entry) for entry in cached["files"]] == list(stamp):
            return str(cached["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _save_digest(folder: Path, stamp: tuple[tuple[str, int, int], ...], digest: str) -> None:
    staging = folder / f"{CACHE_FILE}.{os.getpid()}.tmp"
    try:
        staging.write_text(json.dumps({"files": stamp, "sha256": digest}) + "\n", encoding="utf-8")
        os.replace(staging, folder / CACHE_FILE)
    except OSError as error:  # a read-only folder: hashed again by the next process
        logger.debug("cannot cache the identity of %s: %s", folder, error)
        staging.unlink(missing_ok=True)


def _read_origin(folder: Path) -> dict[str, str]:
    try:
        raw = json.loads((folder / ORIGIN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {key: str(raw[key]) for key in ("hub_id", "revision") if isinstance(raw, dict) and raw.get(key)}


def _hub_snapshot(hub_id: str) -> Path | None:
    """The Hub cache's folder of `hub_id`'s files, if its config is cached (no network)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(hub_id, "config.json")
    except ValueError:  # not a valid repository id
        return None
    return Path(found).parent if isinstance(found, str) else None
