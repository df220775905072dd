"""`cctv-gender train`: a new head from a labelled folder, compared, registered, maybe promoted."""

from __future__ import annotations

import argparse

from model.dataset import DatasetError, scan_labelled_folder
from model.registry import RegistryError
from watcher.commands.arguments import UsageError, add_config, add_data_argument, seed_type
from watcher.commands.exit_codes import EXIT_OK
from watcher.config import Config
from watcher.errors import StartupError
from watcher.wording import plural

HELP = "train a new head on a labelled folder, evaluate, maybe promote"


def training_failures() -> tuple[type[Exception], ...]:
    """What a bad dataset, registry or Keras backend raises: one line for the operator."""
    from model.keras_head import KerasBackendError

    return (DatasetError, RegistryError, KerasBackendError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config(parser)
    add_data_argument(parser)
    parser.add_argument(
        "--promote",
        choices=("auto", "never", "force"),
        default="auto",
        help="auto (default): only if it beats the current head and zero-shot on the test split",
    )
    parser.add_argument(
        "--seed", type=seed_type, default=None, help="split and training seed (default training.seed)"
    )


def run(config: Config, args: argparse.Namespace) -> int:
    from model.report import comparison_table
    from model.train_run import TrainingOptions, train
    from model.training import FitSettings, SplitFractions
    from watcher.pipeline.assembly import load_engine_set

    try:
        scan_labelled_folder(args.data)  # before CLIP loads: a folder that is not a labelled one
    except DatasetError as error:
        raise UsageError(f"--data {error}") from None
    settings = config.training
    options = TrainingOptions(
        data=args.data.resolve(),
        registry=config.registry_dir,
        feature_cache=config.feature_cache_dir,
        fractions=SplitFractions(validation=settings.validation_fraction, test=settings.test_fraction),
        fit=FitSettings(
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            patience=settings.patience,
            learning_rate=settings.learning_rate,
            seed=settings.seed if args.seed is None else args.seed,
        ),
        extract_batch_size=settings.extract_batch_size,
        max_pixels=config.inbox.max_pixels,
        max_file_bytes=config.inbox.max_file_bytes,
        promote=args.promote,
        prompts=config.model.zero_shot.by_label(),
        progress=True,  # a bar on a terminal, plain lines elsewhere (model.progress)
    )
    engines = load_engine_set(config)
    others = {tag: other for tag, other in engines.passing.items() if other is not engines.chosen}
    try:
        outcome = train(options, extractor=engines.chosen, other_engines=others)
    except training_failures() as error:
        raise StartupError(str(error)) from None
    print(f"head {outcome.version}: test split comparison")
    print(outcome.table())
    if len(outcome.engines) > 1:
        print()
        print(f"head {outcome.version} on each engine that passed the gate (test split)")
        print(comparison_table(outcome.engines))
    print()
    print(outcome.decision)
    print(
        f"feature extraction {outcome.extraction_seconds:.1f} s, fitting {outcome.fit_seconds:.1f} s; "
        f"{plural(len(outcome.skipped), 'image')} skipped"
    )
    print(f"report: {outcome.folder / 'report.md'}")
    return EXIT_OK
