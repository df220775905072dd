"""The model registry: one folder per head version and a `current` pointer to the one served.

    <registry>/<version>/head.keras       the Keras model
    <registry>/<version>/metadata.json    CLIP name and identity, feature size, preprocessing version...
    <registry>/<version>/learnt           content hashes of the images it was fitted and validated on
    <registry>/current                    a text file naming the served version
    <registry>/history                    the versions promoted so far, oldest first (for rollback)

Versions are written under a temporary name and renamed into place; the pointer is replaced by
a rename too, so a reader never sees half of either. What changes the pointer or the history
(a training run from its comparison to its promotion, `models promote`, `models rollback`) holds
the registry's lock, an flock on the registry folder itself: two of them never interleave, so a
head is never promoted over one it was not compared with. A registration holds it too, so the
temporary folder a killed one left is known dead, and the next registration removes it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

from model.identity import ClipIdentity, recorded_identity
from model.labels import LABEL_ORDER
from model.registry_files import NotAFile, as_umask_allows, read_regular, write_atomically
from model.registry_lock import registry_lock

logger = logging.getLogger(__name__)

CURRENT_POINTER = "current"
HISTORY_FILE = "history"
HEAD_FILE = "head.keras"
METADATA_FILE = "metadata.json"
LEARNT_FILE = "learnt"
# More than any version name (a timestamp and a suffix): a pointer longer is read this far.
MAX_POINTER_BYTES = 4096
# More than any metadata.json the training writes.
MAX_METADATA_BYTES = 16 * 1024 * 1024
# A staging folder's name: `.<version>.` and mkdtemp's eight random characters.
_STAGING_NAME = re.compile(r"\.[^/]+\.[a-z0-9_]{8}")


class RegistryError(Exception):
    """The registry or one of its versions is unusable; the message says which and why."""


@dataclass(frozen=True)
class HeadMetadata:
    """`clip_model` names the CLIP model (folder name or Hub id; a path in heads registered before
    identities were recorded) and `clip_identity` its content (model.identity.ClipIdentity.recorded)."""

    version: str
    clip_model: str
    feature_size: int
    preprocessing_version: str
    threshold: float = 0.5
    label_order: tuple[str, ...] = tuple(str(label) for label in LABEL_ORDER)
    clip_identity: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def clip(self) -> ClipIdentity:
        """The CLIP model this head was trained on."""
        return recorded_identity(self.clip_model, self.clip_identity)

    @classmethod
    def read(cls, version_dir: Path) -> HeadMetadata:
        path = version_dir / METADATA_FILE
        try:
            # Read between batches on the daemon's loop: a FIFO there must not hold it.
            raw = json.loads(read_regular(path, limit=MAX_METADATA_BYTES).decode("utf-8"))
            known = {name: raw.pop(name) for name in list(raw) if name in cls.__dataclass_fields__}
            known["label_order"] = tuple(known.get("label_order", ()))
            known["clip_identity"] = {str(k): str(v) for k, v in (known.get("clip_identity") or {}).items()}
            metadata = cls(**known, extra=raw)
            metadata._check_types()
            return metadata
        except (OSError, ValueError, TypeError, AttributeError) as error:
            raise RegistryError(f"{path}: unreadable head metadata: {error}") from None

    def _check_types(self) -> None:
        """TypeError naming the first field of the wrong type (a hand-edited file): a `null`
        threshold would otherwise pass here and break whatever formats or compares it later."""
        texts = ("version", "clip_model", "preprocessing_version")
        for name in texts:
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be text, not {getattr(self, name)!r}")
        if isinstance(self.feature_size, bool) or not isinstance(self.feature_size, int):
            raise TypeError(f"feature_size must be a whole number, not {self.feature_size!r}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int | float):
            raise TypeError(f"threshold must be a number, not {self.threshold!r}")
        if not all(isinstance(label, str) for label in self.label_order):
            raise TypeError(f"label_order must be a list of labels, not {list(self.label_order)!r}")

    def to_json(self) -> str:
        data = asdict(self)
        extra = data.pop("extra")
        data["label_order"] = list(self.label_order)
        return json.dumps({**data, **extra}, indent=2, sort_keys=True) + "\n"


def current_version(registry: Path) -> str | None:
    """The version served (None: zero-shot, no pointer). RegistryError for a pointer that cannot
    be read as one: not text, not a file (a FIFO there is never waited on: the daemon's loop
    reads it between batches), unreadable."""
    pointer = registry / CURRENT_POINTER
    try:
        version = read_regular(pointer, limit=MAX_POINTER_BYTES).decode("utf-8").strip()
    except FileNotFoundError:
        return None
    except NotAFile:
        raise RegistryError(f"{pointer}: not a file naming a version") from None
    except UnicodeDecodeError:
        raise RegistryError(f"{pointer}: not a version name (not UTF-8 text)") from None
    except OSError as error:
        raise RegistryError(f"{pointer}: cannot be read: {error.strerror or error}") from None
    return version or None


def served_version(registry: Path) -> str:
    """What `status` and the web pages show as served when no daemon says: the pointer's version,
    `zero-shot` without one, or why it cannot be read."""
    try:
        return current_version(registry) or "zero-shot"
    except RegistryError as error:
        return f"unknown ({error})"


def learnt_images(registry: Path, version: str) -> frozenset[str] | None:
    """The content hashes of the images `version` was fitted and validated on; None for a version
    registered before they were recorded (or whose record cannot be read)."""
    try:
        text = (registry / version / LEARNT_FILE).read_text(encoding="ascii")
    except (OSError, ValueError):
        return None
    return frozenset(text.split())


def version_dir(registry: Path, version: str) -> Path:
    path = registry / version
    if not (path / HEAD_FILE).is_file():
        raise RegistryError(f"{path}: head version {version!r} has no {HEAD_FILE}")
    return path


def new_version_name(registry: Path) -> str:
    """A sortable, unique version name: the UTC time of the run."""
    base = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    name, number = base, 1
    while (registry / name).exists():
        number += 1
        name = f"{base}-{number}"
    return name


def register_version(registry: Path, version: str, write: Callable[[Path], None]) -> Path:
    """Let `write` fill a staging folder, then rename it into place as `<registry>/<version>`.

    Staging folders are made only here, with the registry's lock held: any found while holding it
    is a registration's that died before its rename (a killed training run), and is removed."""
    with registry_lock(registry):
        final = registry / version
        if final.exists():
            raise RegistryError(f"{final}: version {version!r} already exists")
        _remove_dead_staging(registry)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=registry))
        try:
            as_umask_allows(staging)  # mkdtemp's 0700 would keep the operators' group out
            write(staging)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return final


def _remove_dead_staging(registry: Path) -> None:
    """Remove the staging folders of registrations that died (the caller holds the lock)."""
    for entry in registry.iterdir():
        # Only names mkdtemp gave register_version: anything else there is not ours to remove.
        if not _STAGING_NAME.fullmatch(entry.name) or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            shutil.rmtree(entry)
        except OSError as error:
            logger.warning("cannot remove %s, left by a registration that died: %s", entry, error)
        else:
            logger.info("removed %s, left by a registration that died", entry)


def register_head(registry: Path, model: Any, metadata: HeadMetadata) -> Path:
    """Save a Keras head and its metadata as a new version folder, atomically."""

    def write(folder: Path) -> None:
        model.save(folder / HEAD_FILE)
        (folder / METADATA_FILE).write_text(metadata.to_json(), encoding="utf-8")

    return register_version(registry, metadata.version, write)


def set_current(registry: Path, version: str) -> None:
    """Point `current` at `version` with one atomic rename."""
    with registry_lock(registry):
        version_dir(registry, version)
        write_atomically(registry / CURRENT_POINTER, version + "\n")
    logger.info("registry %s: current head is now %s", registry, version)


def promotion_history(registry: Path) -> list[str]:
    try:
        return (registry / HISTORY_FILE).read_text(encoding="utf-8").split()
    except FileNotFoundError:
        return []


def promote(registry: Path, version: str) -> None:
    """Serve `version` from now on, remembering it for rollback.

    The pointer moves first: a promotion cut short (a full disk, a kill) between the two files
    leaves the history without the version rather than naming one that was never served, which
    a later rollback would then serve."""
    with registry_lock(registry):
        version_dir(registry, version)
        history = [name for name in promotion_history(registry) if name != version] + [version]
        set_current(registry, version)
        write_atomically(registry / HISTORY_FILE, "\n".join(history) + "\n")


def rollback(registry: Path) -> str | None:
    """Return to the version promoted before the current one; None means back to zero-shot."""
    with registry_lock(registry):
        return _rollback(registry)


def _rollback(registry: Path) -> str | None:
    history = promotion_history(registry)
    current = current_version(registry)
    if current is None:
        raise RegistryError(f"{registry}: no current head to roll back from")
    if history and history[-1] == current:
        history.pop()
    # Otherwise the current head's promotion was cut short after it moved the pointer (promote
    # moves it first), before it recorded the version: the last recorded one served before it,
    # even where the current head was promoted once before (a re-promotion) and is listed earlier.
    write_atomically(registry / HISTORY_FILE, "".join(f"{name}\n" for name in history))
    if not history:
        (registry / CURRENT_POINTER).unlink()
        logger.info("registry %s: rolled back to zero-shot", registry)
        return None
    set_current(registry, history[-1])
    return history[-1]


def list_versions(registry: Path) -> list[HeadMetadata]:
    """Every complete version in the registry, oldest first."""
    if not registry.is_dir():
        return []
    versions = []
    for folder in sorted(registry.iterdir()):
        if folder.is_dir() and not folder.name.startswith(".") and (folder / HEAD_FILE).is_file():
            try:
                versions.append(HeadMetadata.read(folder))
            except RegistryError as error:
                logger.warning("%s", error)
    return versions


def package_versions() -> dict[str, str]:
    """The versions of what made a head (its metadata keeps them)."""
    versions = {}
    for name in (
        "cctv-gender",
        "torch",
        "onnxruntime",
        "transformers",
        "keras",
        "scikit-learn",
        "numpy",
        "pillow",
    ):
        try:
            versions[name] = package_metadata.version(name)
        except package_metadata.PackageNotFoundError:
            pass
    return versions
