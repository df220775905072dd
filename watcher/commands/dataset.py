"""`cctv-gender dataset export DIR`: a labelled folder (`DIR/FEMALE/`, `DIR/MALE/`, the layout
`train --data` reads) from the frames operators reviewed, with a manifest of what went where."""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import tempfile
from pathlib import Path

from sqlalchemy import Engine

from watcher.commands.arguments import UsageError, add_config, folder_to_make_type
from watcher.commands.exit_codes import EXIT_OK
from watcher.commands.filters import add_filter_arguments, filters_from
from watcher.config import Config
from watcher.intake.stored_frames import FrameGone, FrameRefused, frame_file, frame_roots
from watcher.store.opening import open_database
from watcher.store.queries import ResultFilter, TimeBasis
from watcher.store.reviews import ReviewedFrame, ReviewLabel, labelled_frames
from watcher.wording import plural

HELP = "a labelled training folder from reviewed frames"
MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("result_id", "label", "label_from", "camera", "stored_path", "exported_as", "how")
CLASS_FOLDERS = {"female": "FEMALE", "male": "MALE"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")
    export = actions.add_parser("export", help="write DIR/FEMALE and DIR/MALE (hard links, else copies)")
    add_config(export)
    export.add_argument("folder", type=folder_to_make_type, metavar="DIR", help="a new or empty folder")
    export.add_argument(
        "--reviewed",
        action="store_true",
        help="only frames an operator reviewed (default: also the rest, labelled by the model)",
    )
    add_filter_arguments(export, time_basis=TimeBasis.CAPTURED)


def run(config: Config, args: argparse.Namespace) -> int:
    named: Path = args.folder
    # The real folder: the export is built beside it and renamed to it, which must not be a link
    # to an empty folder (the rename would meet the link).
    folder = Path(os.path.realpath(named))  # never raises (a link loop is left as it is)
    if folder.exists() and any(folder.iterdir()):
        raise UsageError(f"{named} is not empty: export into a new folder")
    if folder == Path(os.path.realpath(os.curdir)):
        # Replaced by the export, it would leave the shell standing in a removed folder (empty).
        raise UsageError(f"{named} is the folder you are in: name it from its parent (cd ..)")
    _refuse_site_folders(config, folder, shown=named)
    filters = filters_from(args, zone=config.display.zone)
    engine = open_database(config, migrate=False, read_only=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Built beside DIR and renamed into place at the end: an export that fails half way leaves
    # no half-made DIR behind (which the rerun would refuse as not empty).
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        counts = _export(engine, work, filters=filters, reviewed_only=args.reviewed, config=config)
        if folder.exists():
            folder.rmdir()
        work.rename(folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        engine.dispose()
    print(
        f"exported {plural(counts['female'], 'female frame')} and {plural(counts['male'], 'male frame')} "
        f"to {named} (manifest: {named / MANIFEST})"
    )
    if counts["skipped"]:
        print(f"{plural(counts['skipped'], 'frame')} skipped: gone, refused or duplicate (see the manifest)")
    return EXIT_OK


def _refuse_site_folders(config: Config, folder: Path, *, shown: Path) -> None:
    """Not in the inbox (the daemon would classify the exported frames again, counting each twice),
    nor in processed/ or failed/, where the daemon moves frames."""
    for key, site_folder in config.paths.site_folders().items():
        if folder.is_relative_to(site_folder):
            raise UsageError(f"{shown} lies inside {key} ({site_folder}): export into a folder of its own")


def _export(
    engine: Engine, folder: Path, *, filters: ResultFilter, reviewed_only: bool, config: Config
) -> dict[str, int]:
    roots = frame_roots(config.paths.processed, config.paths.failed)
    for name in CLASS_FOLDERS.values():
        (folder / name).mkdir()
    counts = {"female": 0, "male": 0, "skipped": 0}
    exported_files: dict[str, int] = {}  # stored path → the result id exported with it
    with (folder / MANIFEST).open("w", newline="", encoding="utf-8") as out:
        manifest = csv.writer(out)
        manifest.writerow(MANIFEST_COLUMNS)
        for frame in labelled_frames(engine, filters=filters, reviewed_only=reviewed_only):
            label, label_from = _training_label(frame)
            exported, how = None, "left out: reviewed unsure"
            if label is not None and frame.stored_path in exported_files:
                # One file under two rows would sit in the training and the test split at once.
                how = f"duplicate of result {exported_files[frame.stored_path]}"
            elif label is not None:
                exported, how = _export_one(frame, folder, CLASS_FOLDERS[label], roots=roots)
            if exported is not None:
                exported_files[frame.stored_path] = frame.result_id
            if label is not None:
                counts[label if exported else "skipped"] += 1
            row = (frame.result_id, label or "unsure", label_from, frame.camera or "", frame.stored_path)
            manifest.writerow((*row, exported or "", how))
    return counts


def _training_label(frame: ReviewedFrame) -> tuple[str | None, str]:
    """The review's label wins; an unreviewed frame keeps the model's."""
    if frame.review_label is not None:
        return (None if frame.review_label == ReviewLabel.UNSURE else str(frame.review_label)), "review"
    return frame.model_label, "model"


def _export_one(
    frame: ReviewedFrame, root: Path, class_folder: str, *, roots: tuple[Path, ...]
) -> tuple[str | None, str]:
    """The frame linked (else copied) into its class folder; the name relative to the export."""
    try:
        source = frame_file(frame.stored_path, roots=roots)
    except FrameRefused:
        return None, "refused: outside processed/ and failed/"
    except FrameGone:
        return None, "missing"
    # The id keeps names unique (two cameras both have 0001.bmp); the suffix keeps the format.
    name = f"{class_folder}/{frame.result_id}{source.suffix.lower() or '.bmp'}"
    try:
        os.link(source, root / name)
        return name, "link"
    except OSError:  # another filesystem, or links not allowed there
        shutil.copy2(source, root / name)
        return name, "copy"
