"""A labelled training folder: one subfolder per class, as in the CCTV Gender Classifier Dataset.

DIR/FEMALE/*.bmp   DIR/MALE/*.bmp     (folder names in any case; .png and .jpg accepted too)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from model.labels import LABEL_ORDER, Label

IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg")


class DatasetError(Exception):
    """The folder cannot be used for training or evaluation; the message says why."""


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: Label
    root: Path | None = None  # the labelled folder it was found in

    @property
    def name(self) -> str:
        """The image as the operator filed it: its path from the labelled folder
        (FEMALE/cam-1/x.bmp), so that the same file name in two class or camera folders stays two
        entries in the report's skipped images."""
        if self.root is not None:
            return self.path.relative_to(self.root).as_posix()
        return f"{self.path.parent.name}/{self.path.name}"


def scan_labelled_folder(root: Path) -> list[LabelledImage]:
    """Every image under `root`'s class folders, sorted; unknown subfolders are an error."""
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    class_dirs: dict[Label, Path] = {}
    unknown = []
    for child in sorted(root.iterdir()):
        if not child.is_dir() or child.name.startswith("."):
            continue
        try:
            label = Label(child.name.lower())
        except ValueError:
            unknown.append(child.name)
            continue
        if label in class_dirs:
            raise DatasetError(
                f"{root}: two folders for class {label}: {class_dirs[label].name} and {child.name}"
            )
        class_dirs[label] = child
    if unknown:
        expected = " and ".join(label.upper() for label in LABEL_ORDER)
        raise DatasetError(f"{root}: unexpected subfolders {', '.join(unknown)}; expected only {expected}")
    missing = [label.upper() for label in LABEL_ORDER if label not in class_dirs]
    if missing:
        raise DatasetError(f"{root}: missing class folder {', '.join(missing)}")
    images = []
    for label in LABEL_ORDER:
        for path in sorted(class_dirs[label].rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                images.append(LabelledImage(path=path, label=label, root=root))
    return images


def require_enough(counts: dict[Label, int], *, minimum_per_class: int, left_out: int = 0) -> None:
    """Stop with a message saying how many images each class needs (and how many copies of an
    image, or pictures under both classes, were `left_out`)."""
    short = {label: count for label, count in counts.items() if count < minimum_per_class}
    if short:
        details = ", ".join(f"{label.upper()} has {count}" for label, count in short.items())
        copies = (
            f" ({left_out} copies of an image, or pictures under both classes, left out)" if left_out else ""
        )
        raise DatasetError(
            f"too few usable images to split into train, validation and test: {details}; "
            f"each class needs at least {minimum_per_class}{copies}"
        )


def fingerprint(content_hashes: list[tuple[str, Label]]) -> str:
    """A digest of what was trained on: each image's content hash and label, order-independent."""
    digest = hashlib.sha256()
    for content_hash, label in sorted(content_hashes):
        digest.update(f"{content_hash} {label}\n".encode())
    return digest.hexdigest()
