"""`cctv-gender model fetch [ID] --to DIR`: save a CLIP model into a folder that `model.clip` can
name, so a machine without network access loads it offline (run it on a connected machine and
copy the folder over). The `fetch` action of `cctv-gender models`."""

from __future__ import annotations

import argparse
import sys

from watcher.commands.arguments import add_config, folder_to_make_type
from watcher.commands.exit_codes import EXIT_OK
from watcher.errors import StartupError

HELP = "save a CLIP model (model, image processor, tokenizer) into DIR for model.clip"
DEFAULT_CLIP = "openai/clip-vit-base-patch32"  # model.hub.DEFAULT_CLIP, without importing torch here


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model_id",
        nargs="?",
        default=DEFAULT_CLIP,
        metavar="ID",
        help=f"a Hugging Face model id, or a folder holding a saved model (default: {DEFAULT_CLIP})",
    )
    parser.add_argument(
        "--to",
        type=folder_to_make_type,
        required=True,
        metavar="DIR",
        help="the folder to save it in (made if missing)",
    )
    add_config(parser)


def run(args: argparse.Namespace) -> int:
    # Loading and saving models needs torch and transformers: imported here only.
    from model.hub import fetch_clip
    from model.runtime import ModelLoadError

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    target = args.to.absolute()
    try:
        fetch_clip(args.model_id, target, progress=progress)
    except ModelLoadError as error:
        raise StartupError(str(error)) from None
    except OSError as error:
        raise StartupError(f"cannot save into {target}: {error.strerror or error}") from None
    print(f"saved {args.model_id} into {target}")
    print(f'set model.clip = "{target}" in the config (copy the folder first to an offline machine)')
    return EXIT_OK
