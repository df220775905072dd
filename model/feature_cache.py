"""CLIP features cached on disk, keyed by content hash, CLIP model, preprocessing version and the
engine that computed them (`onnxruntime-int8`, `torch-fp32`...: model.runtime.Runtime.tag).

    <cache>/<sha256(clip id + preprocessing version + engine)[:16]>/<content sha256[:2]>/<content sha256>.npy

Features of two engines are close (the fidelity gate) but not equal: a training run never mixes them.

A retrain over the same folder (or a grown one) extracts only images it has not seen.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np


class FeatureCache:
    def __init__(self, root: Path, *, clip_model: str, preprocessing_version: str, engine: str) -> None:
        key = f"{clip_model}\n{preprocessing_version}\n{engine}"
        self.folder = root / hashlib.sha256(key.encode()).hexdigest()[:16]
        self._key = key

    def _path(self, content_hash: str) -> Path:
        return self.folder / content_hash[:2] / f"{content_hash}.npy"

    def get(self, content_hash: str) -> np.ndarray | None:
        try:
            features: np.ndarray = np.load(self._path(content_hash), allow_pickle=False)
            return features
        except (FileNotFoundError, ValueError, OSError):
            # Missing, or damaged by a crash: extract again.
            return None

    def put(self, content_hash: str, features: np.ndarray) -> None:
        path = self._path(content_hash)
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, staging = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(descriptor, "wb") as handle:
            np.save(handle, features.astype(np.float32), allow_pickle=False)
        os.replace(staging, path)
        marker = self.folder / "KEY"
        if not marker.exists():
            marker.write_text(f"{self._key}\n", encoding="utf-8")
