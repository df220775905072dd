"""A CLIP model's parts (weights, image processor, tokenizer) loaded with transformers'
`from_pretrained`, refused with one sentence where they do not make one working model.

transformers fills in for much of what a folder lacks instead of failing: a folder without
config.json loads ViT-B/32's default config (then fails on the weights' shapes with a RuntimeError
that points at a report it printed), tensors missing from the weights are initialised at random
with a log line, and tokenizer files missing give a tokenizer of its special tokens alone, which
turns every zero-shot prompt into the same run of unknown tokens. Each is refused here: the
first would stop startup with a traceback, the others serve features or scores of a model nobody
trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from model.messages import first_line
from model.runtime import ModelLoadError

if TYPE_CHECKING:
    from transformers import CLIPModel


@dataclass(frozen=True)
class ClipParts:
    model: CLIPModel
    processor: Any  # its image processor
    tokenizer: Any


def load_clip_parts(source: str, *, dtype: torch.dtype | str, offline: bool) -> ClipParts:
    """`source`'s model (loaded as `dtype`), image processor and tokenizer; ModelLoadError with a
    one-line reason where they cannot be loaded or do not fit together."""
    from huggingface_hub.errors import StrictDataclassError
    from safetensors import SafetensorError
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    if Path(source).is_dir() and not (Path(source) / "config.json").is_file():
        raise ModelLoadError(f"cannot load CLIP model {source!r}: the folder has no config.json")
    try:
        # With output_loading_info: the model, and what its weights lacked (typed as the model alone).
        loaded: tuple[CLIPModel, dict[str, Any]] = CLIPModel.from_pretrained(  # type: ignore[assignment]
            source, dtype=dtype, local_files_only=offline, output_loading_info=True
        )
        model, loading = loaded
        processor = AutoImageProcessor.from_pretrained(source, local_files_only=offline)  # type: ignore[no-untyped-call]  # unannotated
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline)
    # A damaged weights file raises SafetensorError; a config.json of the wrong shape or types,
    # RuntimeError or StrictDataclassError: each means this folder holds no usable model.
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError, StrictDataclassError) as error:
        hint = (
            ""
            if Path(source).is_dir()
            else " (model.clip: a Hugging Face id needs the network once; a local folder loads offline)"
        )
        raise ModelLoadError(f"cannot load CLIP model {source!r}: {_reason(error)}{hint}") from None
    problem = _made_up(model, loading["missing_keys"], tokenizer) or _sizes_differ(model, processor)
    if problem:
        raise ModelLoadError(f"cannot load CLIP model {source!r}: {problem}")
    return ClipParts(model=model, processor=processor, tokenizer=tokenizer)


def _reason(error: BaseException) -> str:
    from safetensors import SafetensorError

    if isinstance(error, RuntimeError) and "mismatched_sizes" in str(error):
        return "its weights do not have the shapes its config.json describes"
    if isinstance(error, SafetensorError):  # its message names no file
        return f"its weights (*.safetensors) cannot be read: {first_line(error)}"
    return first_line(error)


def _made_up(model: Any, missing: set[str], tokenizer: Any) -> str | None:
    """What transformers would have made up for this model: weights initialised at random, or a
    tokenizer of special tokens only (its vocabulary files missing)."""
    parameters = sorted(name for name, _ in model.named_parameters() if name in missing)
    if parameters:
        more = f" and {len(parameters) - 1} more" if len(parameters) > 1 else ""
        return f"its weights lack {parameters[0]}{more}"
    if len(tokenizer) <= len(tokenizer.all_special_ids):
        return "its tokenizer has no vocabulary (vocab.json and merges.txt, or tokenizer.json, missing)"
    return None


def _sizes_differ(model: Any, processor: Any) -> str | None:
    """The image processor must make pixels of the size the vision model takes, whatever the
    frame's shape: otherwise every frame fails in the model."""
    expected = int(model.config.vision_config.image_size)
    made = _pixels_made(processor)
    if made is None:
        return (
            "its image processor makes pixels of each frame's own shape (do_center_crop is false and "
            "its size is not a height and width): frames would not fit its vision model"
        )
    if made != (expected, expected):
        return (
            f"its image processor makes {made[1]}x{made[0]} pixels, its vision model takes "
            f"{expected}x{expected} (preprocessor_config.json and config.json disagree)"
        )
    return None


def _pixels_made(processor: Any) -> tuple[int, int] | None:
    """(height, width) of the processor's output: its crop, or a resize to a fixed size when it
    does not crop; None where it depends on the frame (a resize of the shortest edge alone)."""
    if getattr(processor, "do_center_crop", True):
        crop = getattr(processor, "crop_size", None) or {"height": 224, "width": 224}
        return int(crop["height"]), int(crop["width"])
    size = getattr(processor, "size", None) or {}
    return (int(size["height"]), int(size["width"])) if "height" in size and "width" in size else None
