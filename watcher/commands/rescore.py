"""`cctv-gender rescore`: re-classify stored rows from their stored CLIP embeddings.

Only rows whose embedding came from the head's CLIP model and preprocessing version are
rescored; CLIP itself never runs (unless the head asked for is zero-shot, which needs CLIP's
text encoder for its prompts).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from model.registry import HeadMetadata, RegistryError, current_version, version_dir
from watcher.commands.arguments import UsageError, add_config, add_model_argument, time_type
from watcher.commands.exit_codes import EXIT_OK
from watcher.commands.models import is_zero_shot, require_version
from watcher.config import Config
from watcher.errors import StartupError
from watcher.store.opening import open_database
from watcher.wording import plural

if TYPE_CHECKING:
    from model.heads import Head

HELP = "re-classify stored rows from their stored CLIP embeddings"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config(parser)
    parser.add_argument(
        "--since",
        type=time_type,
        default=None,
        metavar="TIME",
        help="only rows processed since (ISO, or 2h, 7d, today)",
    )
    add_model_argument(parser)


def run(config: Config, args: argparse.Namespace) -> int:
    # numpy (the embeddings) only for this command, not for every start of the command line.
    from watcher.store.embeddings import unpack_embeddings
    from watcher.store.rescoring import rescore_rows

    if args.model is not None and not is_zero_shot(args.model):
        require_version(config, args.model)  # before the database or any model is opened
    try:  # in the site's zone a time the check in UTC let through may leave the years 1-9999
        since = args.since.at(config.display.zone) if args.since is not None else None
    except ValueError as error:
        raise UsageError(f"--since: {error}") from None
    engine = open_database(config, migrate=False)
    head, embedding_model = _chosen_head(
        config, args.model or current_version(config.registry_dir) or "zero-shot"
    )
    report = rescore_rows(
        engine,
        classify=lambda blobs: head.predict(unpack_embeddings(blobs)),
        model_version=head.version,
        embedding_model=embedding_model,
        since=since,
    )
    print(f"rescored {plural(report.rescored, 'row')} with {head.version}")
    if report.skipped:
        print(
            f"left as they were: {plural(report.skipped, 'ok row')} in range without an embedding "
            f"from {embedding_model}"
        )
    return EXIT_OK


def _chosen_head(config: Config, chosen: str) -> tuple[Head, str]:
    """The head (a registry version, or zero-shot) and the embedding model its input must come from."""
    from model.clip_features import PREPROCESSING_VERSION
    from model.serving import ZERO_SHOT_PREFIX, build_zero_shot_head, read_head_file, refuse_if_incompatible
    from watcher.pipeline.assembly import load_extractor
    from watcher.store.embeddings import embedding_model_id

    if chosen == "zero-shot" or chosen.startswith(ZERO_SHOT_PREFIX):
        extractor = load_extractor(config)
        head = build_zero_shot_head(extractor, config.model.zero_shot.by_label())
        return head, embedding_model_id(extractor.identity.key, PREPROCESSING_VERSION)
    try:
        folder = version_dir(config.registry_dir, chosen)
        metadata = HeadMetadata.read(folder)
        refuse_if_incompatible(metadata, clip_source=metadata.clip_model)
        keras_head = read_head_file(folder, metadata)
    except (RegistryError, OSError, ValueError) as error:
        raise StartupError(str(error)) from None
    return keras_head, embedding_model_id(metadata.clip.key, metadata.preprocessing_version)
