"""The Hugging Face Hub, for a CLIP model named by id: fail fast when it cannot be reached, and
save a model into a folder (`cctv-gender model fetch`) that an offline machine can load.

Without a check first, a Hub id on a machine with no network costs about 38 s of retries (each
logged twice) before the error. `local_only` looks once, with a short timeout, and decides.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from model.identity import identify_clip, write_origin
from model.library_logs import single_library_logs
from model.messages import first_line
from model.runtime import ModelLoadError

logger = logging.getLogger(__name__)

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
REACHABLE_TIMEOUT_S = 5.0


def fetch_hint(hub_id: str) -> str:
    return (
        f"on a machine with network access run `cctv-gender model fetch {hub_id} --to DIR`, "
        "copy DIR here and set model.clip to it"
    )


def hub_reachable(*, timeout: float = REACHABLE_TIMEOUT_S) -> bool:
    """One request to the Hub's endpoint (through the Hub library's own session, so its proxies
    and offline mode apply), no retries."""
    from huggingface_hub import constants, get_session

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception as error:  # noqa: BLE001 - whatever the transport raises means unreachable
        logger.debug("the Hub at %s cannot be reached: %s", constants.ENDPOINT, error)
        return False
    return True


def local_only(source: str) -> bool:
    """Whether to load `source` without the network: a folder; or a Hub id already in the Hub
    cache when the Hub cannot be reached. A Hub id neither reachable nor cached raises
    ModelLoadError with what to run instead."""
    if Path(source).is_dir():
        return True
    problem = _not_a_folder(source)
    if problem:
        raise ModelLoadError(f"cannot load CLIP model {source!r}: {problem}")
    if hub_reachable():
        return False
    if identify_clip(source).sha256 is not None:  # its files are in the Hub cache
        logger.info("the Hub cannot be reached: loading %s from the local cache", source)
        return True
    raise ModelLoadError(
        f"cannot load CLIP model {source!r}: the Hugging Face Hub cannot be reached and the model is "
        f"not in the local cache; {fetch_hint(source)}"
    )


def _not_a_folder(source: str) -> str | None:
    """Why `source`, written as a path (absolute, `./`, `../`, `~`, or a file or link that is
    there), names no model folder; None for a Hub id. Told as a Hub id, a mistyped folder or a
    weights file would send the operator to `model fetch` it from the Hub."""
    path = Path(source)
    try:
        path.stat()  # follows links: a loop or a dangling link fails here
    except OSError as error:
        if path.is_absolute() or path.is_symlink() or source.startswith(("./", "../", "~")):
            return f"there is no folder at that path ({error.strerror or error})"
        return None
    return "that is a file, not a folder holding a saved model (model.clip names the folder)"


def fetch_clip(source: str, target: Path, *, progress: Callable[[str], None] | None = None) -> Path:
    """Load `source` (a Hub id, or a folder) with from_pretrained and save model, image processor
    and tokenizer into `target` with save_pretrained, recording the Hub id and revision.
    Raises ModelLoadError (one line) when it cannot."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel
    from transformers.utils import logging as hf_logging

    single_library_logs()
    problem = None if Path(source).is_dir() else _not_a_folder(source)
    if problem:
        raise ModelLoadError(f"cannot fetch {source!r}: {problem}")
    if not Path(source).is_dir() and not hub_reachable():
        raise ModelLoadError(
            f"cannot fetch {source!r}: the Hugging Face Hub cannot be reached from this machine; "
            "run this on a machine with network access and copy the folder over"
        )
    from huggingface_hub.utils.tqdm import enable_progress_bars

    enable_progress_bars()  # the download's bars (the daemon turns them off)
    hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]  # transformers: unannotated
    steps: list[tuple[str, Callable[[], object]]] = [
        ("model", lambda: CLIPModel.from_pretrained(source)),
        ("image processor", lambda: AutoImageProcessor.from_pretrained(source)),  # type: ignore[no-untyped-call]  # unannotated
        ("tokenizer", lambda: AutoTokenizer.from_pretrained(source)),
    ]
    target.mkdir(parents=True, exist_ok=True)
    revision = None
    for what, load in steps:
        if progress is not None:
            progress(f"fetching the {what} of {source}")
        try:
            loaded = load()
        except (OSError, ValueError, KeyError) as error:
            raise ModelLoadError(f"cannot fetch {source!r}: {first_line(error)}") from None
        revision = revision or getattr(getattr(loaded, "config", None), "_commit_hash", None)
        loaded.save_pretrained(target)  # type: ignore[attr-defined]  # every step's result has it
    _permissions_from_umask(target)
    origin = identify_clip(source)  # a Hub id, or a folder that was itself fetched
    if origin.hub_id:
        write_origin(target, hub_id=origin.hub_id, revision=origin.revision or revision)
    return target


def _permissions_from_umask(folder: Path) -> None:
    """The saved files get the mode a new file gets here: the weights' writer makes them 0600, and
    a folder prepared by one user is served by another (the service user)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.iterdir():
        if path.is_file() and not path.is_symlink():
            path.chmod(0o666 & ~umask)
