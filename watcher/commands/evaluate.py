"""`cctv-gender evaluate`: metrics of a registered head (or zero-shot) on a labelled folder."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from model.dataset import DatasetError, scan_labelled_folder
from watcher.commands.arguments import UsageError, add_config, add_data_argument, add_model_argument
from watcher.commands.exit_codes import EXIT_OK
from watcher.commands.models import is_zero_shot, require_version
from watcher.commands.train import training_failures
from watcher.config import Config
from watcher.errors import StartupError
from watcher.wording import plural

if TYPE_CHECKING:
    from model.clip_features import ClipFeatureExtractor
    from model.dataset import LabelledImage
    from model.extraction import ExtractedFeatures

HELP = "metrics of a head on a labelled folder, without training"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config(parser)
    add_data_argument(parser)
    add_model_argument(parser)


def run(config: Config, args: argparse.Namespace) -> int:
    # What the command line names is checked before CLIP loads (that takes seconds).
    if args.model is not None and not is_zero_shot(args.model):
        require_version(config, args.model)
    try:
        images = scan_labelled_folder(args.data)
    except DatasetError as error:
        raise UsageError(f"--data {error}") from None  # the folder named is not a labelled one
    from model.evaluation import classification_metrics
    from model.report import comparison_table
    from model.serving import load_head
    from watcher.pipeline.assembly import load_engine_set

    data = args.data
    engines = load_engine_set(config)
    results, shown = {}, None
    try:
        head = load_head(
            config.registry_dir, args.model, clip=engines.chosen, prompts=config.model.zero_shot.by_label()
        )
        # The engine the daemon runs first, then every other that passed the gate on this machine:
        # a site confirms on its own frames that the faster engine labels them as well.
        for tag, extractor in sorted(engines.passing.items(), key=lambda item: item[1] is not engines.chosen):
            extracted = extract_features(config, images, extractor)
            if len(extracted.items) == 0:
                raise StartupError(f"{data}: no readable images to evaluate on")
            serving = " (serving)" if extractor is engines.chosen else ""
            results[f"{head.version} on {tag}{serving}"] = classification_metrics(
                extracted.labels, head.positive_probability(extracted.features), threshold=head.threshold
            )
            shown = shown or extracted
    except training_failures() as error:
        raise StartupError(str(error)) from None
    assert shown is not None, "at least the chosen engine ran"
    images_used = plural(len(shown.items), "image")
    print(f"{head.version} on {data} ({images_used}, {len(shown.skipped)} skipped)")
    print(comparison_table(results))
    matrix = next(iter(results.values()))["confusion_matrix"]
    print(
        f"confusion matrix, {engines.chosen.runtime.tag} (rows true female/male, columns predicted): {matrix}"
    )
    return EXIT_OK


def extract_features(
    config: Config, images: list[LabelledImage], extractor: ClipFeatureExtractor
) -> ExtractedFeatures:
    """The labelled images' features on one engine, through the training feature cache."""
    from model.extraction import extract_cached

    return extract_cached(
        images,
        extractor=extractor,
        cache_root=config.feature_cache_dir,
        batch_size=config.training.extract_batch_size,
        max_pixels=config.inbox.max_pixels,
        max_file_bytes=config.inbox.max_file_bytes,
        progress=True,  # a bar on a terminal, plain lines elsewhere (model.progress)
    )
