"""The model registry: one folder per head version and a `current` pointer to the one served.

    <registry>/<version>/head.keras       the Keras model
    <registry>/<version>/metadata.json    CLIP id, feature size, preprocessing version, threshold...
    <registry>/current                    a text file naming the served version

Versions are written under a temporary name and renamed into place; the pointer is replaced by
a rename too, so a reader never sees half of either.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from model.labels import LABEL_ORDER

logger = logging.getLogger(__name__)

CURRENT_POINTER = "current"
HEAD_FILE = "head.keras"
METADATA_FILE = "metadata.json"


class RegistryError(Exception):
    """The registry or one of its versions is unusable; the message says which and why."""


@dataclass(frozen=True)
class HeadMetadata:
    version: str
    clip_model: str
    feature_size: int
    preprocessing_version: str
    threshold: float = 0.5
    label_order: tuple[str, ...] = tuple(str(label) for label in LABEL_ORDER)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, version_dir: Path) -> HeadMetadata:
        path = version_dir / METADATA_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            known = {name: raw.pop(name) for name in list(raw) if name in cls.__dataclass_fields__}
            known["label_order"] = tuple(known.get("label_order", ()))
            return cls(**known, extra=raw)
        except (OSError, ValueError, TypeError) as error:
            raise RegistryError(f"{path}: unreadable head metadata: {error}") from None

    def to_json(self) -> str:
        data = asdict(self)
        extra = data.pop("extra")
        data["label_order"] = list(self.label_order)
        return json.dumps({**data, **extra}, indent=2, sort_keys=True) + "\n"


def current_version(registry: Path) -> str | None:
    pointer = registry / CURRENT_POINTER
    try:
        version = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return version or None


def version_dir(registry: Path, version: str) -> Path:
    path = registry / version
    if not (path / HEAD_FILE).is_file():
        raise RegistryError(f"{path}: head version {version!r} has no {HEAD_FILE}")
    return path


def register_head(registry: Path, model: Any, metadata: HeadMetadata) -> Path:
    """Save a Keras head and its metadata as a new version folder, atomically."""
    registry.mkdir(parents=True, exist_ok=True)
    final = registry / metadata.version
    if final.exists():
        raise RegistryError(f"{final}: version {metadata.version!r} already exists")
    staging = Path(tempfile.mkdtemp(prefix=f".{metadata.version}.", dir=registry))
    model.save(staging / HEAD_FILE)
    (staging / METADATA_FILE).write_text(metadata.to_json(), encoding="utf-8")
    os.rename(staging, final)
    return final


def set_current(registry: Path, version: str) -> None:
    """Point `current` at `version` with one atomic rename."""
    version_dir(registry, version)
    staging = registry / f".{CURRENT_POINTER}.tmp"
    staging.write_text(version + "\n", encoding="utf-8")
    os.replace(staging, registry / CURRENT_POINTER)
    logger.info("registry %s: current head is now %s", registry, version)
