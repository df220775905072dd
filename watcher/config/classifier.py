"""The sections about the model: serving it (`[model]`) and training heads (`[training]`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from model.labels import Label
from watcher.config.base import OptionalPath, Section, resolve, source_of, unset_section
from watcher.config.errors import raise_problems


class ZeroShotConfig(Section):
    """Prompts per class for zero-shot classification; each class's prompt embeddings are averaged."""

    female: list[str] = Field(
        ["a photo of a woman", "a CCTV image of a woman"],
        min_length=1,
        description="Prompts for `female`.",
    )
    male: list[str] = Field(
        ["a photo of a man", "a CCTV image of a man"], min_length=1, description="Prompts for `male`."
    )

    @field_validator("female", "male")
    @classmethod
    def _no_blank_prompts(cls, prompts: list[str]) -> list[str]:
        if any(not prompt.strip() for prompt in prompts):
            raise ValueError("prompts must not be blank")
        return prompts

    def by_label(self) -> dict[Label, list[str]]:
        return {Label.FEMALE: list(self.female), Label.MALE: list(self.male)}


class ModelConfig(Section):
    """The classifier: CLIP image features, then a trained head (or zero-shot prompts)."""

    clip: str = Field(
        "openai/clip-vit-base-patch32",
        min_length=1,
        description="CLIP: a Hugging Face model id, or a folder (absolute, or relative to this file) "
        "holding a saved model; an existing folder is loaded offline.",
    )
    device: str = Field(
        "auto", description="`auto` uses CUDA when present, else the CPU; or `cpu`, `cuda`, `cuda:N`."
    )
    runtime: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto",
        description="What runs CLIP's image tower. `auto` is torch on CUDA; on a CPU, the fastest "
        'engine that passes the fidelity gate, measured once per CPU (README, "Engines on a '
        'CPU"). `torch` forces PyTorch; `onnxruntime` forces ONNX Runtime (CPU only).',
    )
    precision: Literal["auto", "fp32", "fp16", "bf16", "int8"] = Field(
        "auto",
        description="`auto` is fp16 on CUDA; on a CPU, whichever precision of the runtime wins (fp32, "
        "bf16 autocast where the CPU has native bf16, int8 on ONNX Runtime). Or `fp32`, `fp16`, "
        "`bf16` (torch), `int8` (ONNX Runtime). Each row records the precision it was computed in.",
    )
    traced: bool = Field(
        True,
        description="On torch without autocast (a GPU, or fp32 on a CPU), the daemon runs CLIP's image "
        "tower, and each arena frame shape's preprocessing, as TorchScript traces, checked against "
        "Python's path before use: one call without the GIL instead of operations that each wait "
        "for it while other threads run Python. `false` runs them op by op.",
    )
    cpu_threads: int = Field(
        0,
        ge=0,
        le=1024,
        description="CPU threads for CLIP when it runs on the CPU; 0 is one per core. Running several "
        "daemons on one host? Split the cores between them (2 daemons on 8 cores: 4 each): "
        "oversubscribed threads spin.",
    )
    registry: OptionalPath = Field(
        None,
        description="The model registry (trained heads); not set means <paths.data>/models. Until it "
        "holds a current head, frames are classified zero-shot with the prompts below.",
    )
    zero_shot: ZeroShotConfig = Field(default_factory=unset_section, description=ZeroShotConfig.__doc__)

    @field_validator("clip")
    @classmethod
    def _local_folder(cls, value: str, info: ValidationInfo) -> str:
        """A source naming an existing folder (relative to the config) loads offline from it;
        anything else is a Hugging Face model id."""
        source = source_of(info)
        if source is None:
            return value
        try:
            folder = resolve(source.folder, Path(value))
            return str(folder) if folder.is_dir() else value
        except (ValueError, OSError):  # not a path this system can have: a model id, then
            return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda") or (
            value.startswith("cuda:") and value.removeprefix("cuda:").isdigit()
        ):
            return value
        raise ValueError("must be 'auto', 'cpu', 'cuda' or 'cuda:N'")

    @model_validator(mode="after")
    def _runtime_runs_precision(self) -> Self:
        """Combinations no engine runs are refused here, naming the key to change."""
        problems = []
        if self.runtime == "torch" and self.precision == "int8":
            problems.append(
                ("precision", "int8 runs on ONNX Runtime: set model.runtime to 'auto' or 'onnxruntime'")
            )
        if self.runtime == "onnxruntime" and self.precision in ("fp16", "bf16"):
            problems.append(("precision", f"ONNX Runtime runs fp32 or int8 here, not {self.precision}"))
        on_gpu = self.device.startswith("cuda")
        if on_gpu and self.runtime == "onnxruntime":
            problems.append(("runtime", "ONNX Runtime runs on the CPU: set model.device to 'cpu' or 'auto'"))
        if on_gpu and self.precision == "int8":
            problems.append(
                ("precision", "int8 runs on the CPU (ONNX Runtime): set model.device to 'cpu' or 'auto'")
            )
        raise_problems(problems)
        return self


class TrainingConfig(Section):
    """`cctv-gender train`: how the labelled folder is split (stratified by class, seeded) and the
    head fitted."""

    validation_fraction: float = Field(
        0.15,
        gt=0,
        lt=0.5,
        description="Share of the labelled folder for validation (early stopping, the decision threshold).",
    )
    test_fraction: float = Field(
        0.15,
        gt=0,
        lt=0.5,
        description="Share for the test split, used once for the final comparison. With "
        "validation_fraction it must leave at least 20% to train on.",
    )
    epochs: int = Field(
        200,
        ge=1,
        description="At most this many epochs; early stopping on validation loss usually ends sooner.",
    )
    # Past sys.maxsize Keras cannot slice the features; a million is more than any folder here.
    batch_size: int = Field(32, ge=1, le=1_000_000, description="Training batch size.")
    patience: int = Field(
        10,
        ge=1,
        description="Epochs without a better validation loss before stopping (the best weights are "
        "restored).",
    )
    # Adam moves each weight by about this much a step: past 1 it only diverges (1e30: the head's
    # outputs became nan, and `train` a traceback).
    learning_rate: float = Field(0.001, gt=0, le=1, description="Adam's learning rate.")
    seed: int = Field(
        42,
        ge=0,
        le=2**32 - 1,
        description="Seed of the split and the training (`train --seed N` overrides it).",
    )
    extract_batch_size: int = Field(
        32, ge=1, le=4096, description="Images per CLIP batch while extracting training features."
    )
    feature_cache: OptionalPath = Field(
        None,
        description="Cached CLIP features of training images; not set means <paths.data>/feature-cache.",
    )

    @model_validator(mode="after")
    def post_validation(self) -> Self:
        if self.validation_fraction + self.test_fraction > 0.8:
            raise_problems(
                [("test_fraction", "with training.validation_fraction it leaves under 20% to train on")]
            )
        return self
