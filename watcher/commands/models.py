"""`cctv-gender models list | promote VERSION | rollback`: the registry of trained heads."""

from __future__ import annotations

import argparse
from pathlib import Path

from model.registry import (
    HeadMetadata,
    RegistryError,
    current_version,
    list_versions,
    promote,
    rollback,
    version_dir,
)
from watcher.commands import fetch
from watcher.commands.arguments import UsageError, add_config
from watcher.commands.exit_codes import EXIT_OK
from watcher.config import Config
from watcher.errors import StartupError

ALIASES = ("model",)
HELP = "the model registry: list, promote, rollback"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    add_config(actions.add_parser("list", help="registered heads; * marks the current one"))
    promote_parser = actions.add_parser("promote", help="serve VERSION from now on")
    add_config(promote_parser)
    promote_parser.add_argument("version", metavar="VERSION")
    add_config(actions.add_parser("rollback", help="return to the previously promoted head"))
    fetch.add_arguments(actions.add_parser("fetch", help=fetch.HELP))


def run(config: Config, args: argparse.Namespace) -> int:
    if args.models_command == "list":
        return list_heads(config)
    if args.models_command == "promote":
        return promote_head(config, version=args.version)
    if args.models_command == "fetch":
        return fetch.run(args)
    return roll_back(config)


def list_heads(config: Config) -> int:
    registry = config.registry_dir
    current = current_version(registry)
    versions = list_versions(registry)
    # A pointer to a version not listed (removed, or its metadata unreadable: warned above) is
    # served by nothing: a daemon stops at start on it.
    unservable = current is not None and current not in {metadata.version for metadata in versions}
    if not versions:
        print(f"no trained heads in {registry}" + ("" if unservable else "; serving zero-shot CLIP"))
    else:
        _print_versions(versions, current=current)
    if current is None and versions:
        print("(no current head: serving zero-shot CLIP)")
    if unservable:
        print(
            f"(current head {current} cannot be served: its folder, head file or metadata is missing "
            "or unreadable, and a daemon will not start on it; `cctv-gender models promote VERSION` "
            "or `models rollback`)"
        )
    return EXIT_OK


def _print_versions(versions: list[HeadMetadata], *, current: str | None) -> None:
    print(f"{'':2}{'version':<20} {'created':<26} {'test accuracy':>13} {'threshold':>9}  clip")
    for metadata in versions:
        # What training wrote beside the head is only shown: a hand-edited value shows as "-".
        metrics = metadata.extra.get("metrics")
        test = metrics.get("test") if isinstance(metrics, dict) else None
        accuracy = test.get("accuracy") if isinstance(test, dict) else None
        shown_accuracy = f"{accuracy:.3f}" if isinstance(accuracy, int | float) else "-"
        marker = "* " if metadata.version == current else "  "
        created = str(metadata.extra.get("created_at") or "-")
        print(
            f"{marker}{metadata.version:<20} {created:<26} {shown_accuracy:>13} "
            f"{metadata.threshold:>9.3f}  {metadata.clip_model}"
        )


def is_zero_shot(version: str) -> bool:
    """`zero-shot`, or a `zero-shot:<model>` version as rows record it."""
    return version == "zero-shot" or version.startswith("zero-shot:")


def require_version(config: Config, version: str) -> None:
    """A usage error naming the versions that exist when `version` is not one of them; a folder
    of that name whose head file or metadata cannot be read is said as such (exit 1)."""
    versions = [metadata.version for metadata in list_versions(config.registry_dir)]
    if version not in versions and version in _version_folders(config.registry_dir):
        # There, but its metadata unreadable (warned by list_versions): that, not "no version".
        try:
            HeadMetadata.read(version_dir(config.registry_dir, version))
        except RegistryError as error:
            raise StartupError(str(error)) from None
    if version not in versions:
        known = ", ".join(versions) or "none yet (`cctv-gender train` makes one)"
        raise UsageError(f"no head version {version!r} in {config.registry_dir}; versions: {known}")


def _version_folders(registry: Path) -> set[str]:
    try:
        return {folder.name for folder in registry.iterdir() if folder.is_dir()}
    except OSError:
        return set()


def promote_head(config: Config, *, version: str) -> int:
    require_version(config, version)  # first: a version that is not there needs no torch to say so
    # model.serving loads CLIP's code (torch): only this action needs it.
    from model.keras_head import KerasBackendError
    from model.serving import read_head_file, refuse_if_incompatible

    try:
        folder = version_dir(config.registry_dir, version)
        metadata = HeadMetadata.read(folder)
        refuse_if_incompatible(metadata, clip_source=config.model.clip)
        # A head file Keras cannot load would be promoted for a daemon to refuse: a running one
        # keeps its old head, and the next start stops on it.
        read_head_file(folder, metadata)
        promote(config.registry_dir, version)
    except (RegistryError, KerasBackendError) as error:
        raise StartupError(str(error)) from None
    print(f"current head is now {version}; a running daemon switches to it before its next batch")
    return EXIT_OK


def roll_back(config: Config) -> int:
    try:
        version = rollback(config.registry_dir)
    except RegistryError as error:
        raise StartupError(str(error)) from None
    print(f"current head is now {version}" if version else "no head left: serving zero-shot CLIP")
    return EXIT_OK
