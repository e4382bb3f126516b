"""Run configuration: frozen dataclasses grouped by concern, named presets and overrides.

A configuration is a `Config` with three sections, `model`, `data` and `train`. Named presets
live in the `configs/` package (`pact.configs`): `maestro-small` is the module
`configs/maestro_small.py`, whose `get_config()` returns a `Config`. Overrides use dotted keys,
for example `model.num_layers=4` or `train.learning_rate=1e-3`; an unknown key is rejected
with the list of valid ones. The resolved configuration is saved as `config.json` in every run
directory, so sampling and evaluation need only that directory.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import pkgutil
import types
import typing
from pathlib import Path
from typing import Any

from pact.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Perceiver AR architecture and numerics."""

    vocab_size: int | None = None
    """Number of token ids; None takes it from the dataset's tokenizer when training starts."""
    max_context: int = 2048
    """Input length M in tokens: how far back the cross-attention sees."""
    num_latents: int = 256
    """Latents N used in training, and the default at evaluation and sampling time."""
    num_channels: int = 256
    """Width D of the embeddings and of every layer."""
    num_heads: int = 4
    num_layers: int = 6
    """Self-attention blocks over the latents (the cross-attention comes on top)."""
    mlp_ratio: int = 4
    """Hidden width of each MLP as a multiple of `num_channels`."""
    activation: str = "squared_relu"
    """MLP activation: squared_relu (the original code) or gelu."""
    rotary_fraction: float = 0.5
    """Fraction of each head's channels that carry rotary positions; the rest are position-free."""
    rotary_base: float = 10_000.0
    """Rotary wavelengths run geometrically from 2*pi up to about 2*pi*base (rotate-half RoPE)."""
    dropout: float = 0.1
    """Dropout on attention and MLP outputs, training only."""
    cross_attend_dropout: float = 0.5
    """Fraction of context positions dropped as cross-attention keys, training only."""
    compute_dtype: str = "bfloat16"
    """Dtype of matmul inputs; parameters, accumulation, softmax and loss stay float32."""
    attention: str = "auto"
    """Attention kernel: auto, xla, chunked (memory-efficient online softmax) or cudnn."""
    attention_chunk_size: int = 1024
    """Query and key positions per block of the chunked attention."""
    remat: bool = False
    """Recompute each block's activations in the backward pass to save memory."""
    axis_embeddings: bool | None = None
    """Learned absolute position embeddings per grid axis (row, column and channel for
    images), added to the token embeddings. None turns them on for a new run whose dataset
    tokenizer has `position_axes` and off otherwise. True requires such a tokenizer."""
    position_axes: tuple[int, ...] | None = None
    """Grid shape of the axis embeddings, one table per axis. Training sets it from the
    dataset's tokenizer when the axis embeddings are on; None means no axis embeddings."""
    absolute_positions: bool = False
    """Fixed sinusoidal embeddings of each input's index in its document, added to the token
    embeddings on top of the rotary positions. Tasks that recall a position by its place in
    the document, such as the mirrored copy task, need them: rotary positions are relative."""

    def __post_init__(self):
        _check_positive(self, "max_context", "num_latents", "num_channels", "num_heads", "num_layers")
        _check_positive(self, "mlp_ratio", "attention_chunk_size")
        if self.vocab_size is not None and self.vocab_size < 3:
            raise ConfigError(f"model.vocab_size={self.vocab_size} is invalid: it must be at least 3")
        if self.num_latents > self.max_context:
            raise ConfigError(
                f"model.num_latents={self.num_latents} exceeds model.max_context={self.max_context}: "
                "the latents sit on the last positions of the context, so use at most as many"
            )
        if self.num_channels % self.num_heads:
            raise ConfigError(
                f"model.num_channels={self.num_channels} is not divisible by "
                f"model.num_heads={self.num_heads}"
            )
        _check_fraction(self, "rotary_fraction", "dropout", "cross_attend_dropout")
        if self.cross_attend_dropout >= 1.0:
            raise ConfigError("model.cross_attend_dropout must be below 1.0")
        _check_choice(self, "activation", ("squared_relu", "gelu"))
        _check_choice(self, "compute_dtype", ("float32", "bfloat16"))
        _check_choice(self, "attention", ("auto", "xla", "chunked", "cudnn"))
        if self.position_axes is not None:
            # config.json stores the tuple as a JSON list.
            object.__setattr__(self, "position_axes", tuple(self.position_axes))
            if not self.position_axes or not all(
                isinstance(size, int) and size > 0 for size in self.position_axes
            ):
                raise ConfigError(
                    f"model.position_axes={list(self.position_axes)} is invalid: "
                    "give one positive size per axis"
                )
            if self.axis_embeddings is False:
                raise ConfigError(
                    "model.position_axes is set but model.axis_embeddings=false: "
                    "leave model.position_axes unset to train without axis embeddings"
                )

    @property
    def head_channels(self) -> int:
        return self.num_channels // self.num_heads


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which dataset to train on and how to cut training examples from it."""

    dataset: str = ""
    """Path of a dataset written by `pact encode dataset` (DATA_DIR/NAME)."""
    train_split: str = "train"
    eval_split: str = "validation"
    batch_size: int = 8
    """Global batch size in sequences, summed over devices and accumulation steps; a multiple of
    train.grad_accum_steps x the devices of the mesh."""
    worker_count: int = 0
    """Grain worker processes for loading batches; 0 loads in the training process."""
    crop: str = "random"
    """End of each training window: "random" (uniform over the document, as in Perceiver AR) or
    "end" (at the document's end). "end" suits the copy task: its latents then sit on the
    mirrored half, and no step is spent on the random half, which cannot be predicted."""

    def __post_init__(self):
        _check_positive(self, "batch_size")
        _check_choice(self, "crop", ("random", "end"))
        if self.worker_count < 0:
            raise ConfigError(f"data.worker_count={self.worker_count} is invalid: use 0 or more")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation, schedule, checkpoints and logging."""

    steps: int = 10_000
    """Optimizer updates in the whole run (a resumed run continues up to this count)."""
    learning_rate: float = 3e-4
    """Peak learning rate, reached after the warm-up."""
    warmup_steps: int = 500
    end_learning_rate_fraction: float = 0.1
    """The cosine decay ends at this fraction of the peak learning rate."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay (0 gives plain Adam, as in the original code)."""
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    grad_clip_norm: float = 1.0
    """Gradients are clipped to this global norm; 0 turns clipping off."""
    z_loss: float = 1e-4
    """Weight of the auxiliary z-loss, log(Z)^2 per target, that keeps logits from drifting."""
    loss_reduction: str = "mean"
    """mean: average over the batch's target tokens; sum: their total (the original code)."""
    grad_accum_steps: int = 1
    """Micro-batches per update; data.batch_size must be divisible by it."""
    seed: int = 0
    checkpoint_every: int = 500
    """Steps between checkpoints; one is also written at the end and on Ctrl-C."""
    keep_checkpoints: int = 3
    eval_every: int = 250
    """Steps between validation losses; 0 turns periodic validation off."""
    eval_batches: int = 8
    """Batches of fixed validation crops in each validation loss."""
    log_every: int = 10
    """Steps between logged training losses. In a multi-process run, also the steps between the
    checks that stop every process together after Ctrl-C."""
    mesh_data: int = 0
    """Devices on the data-parallel mesh axis; 0 uses every device that mesh_fsdp leaves."""
    mesh_fsdp: int = 1
    """Devices that split parameters and optimizer state (FSDP); 1 replicates them on every device."""
    init_from: str = ""
    """Run directory or exported model whose parameters start a new run, or "bundled" for the
    model shipped with pact; empty starts from random weights. The step count and optimizer
    state start afresh, and the model settings must give the same parameter shapes."""

    def __post_init__(self):
        _check_positive(self, "steps", "learning_rate", "grad_accum_steps", "checkpoint_every")
        _check_positive(self, "keep_checkpoints", "eval_batches", "log_every", "mesh_fsdp")
        if self.mesh_data < 0:
            raise ConfigError(
                f"train.mesh_data={self.mesh_data} is invalid: use 0 (every device left) or more"
            )
        for name in ("warmup_steps", "eval_every", "weight_decay", "grad_clip_norm", "z_loss"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name}={getattr(self, name)} is invalid: use 0 or more")
        _check_fraction(self, "end_learning_rate_fraction")
        _check_choice(self, "loss_reduction", ("mean", "sum"))


@dataclasses.dataclass(frozen=True)
class Config:
    name: str = "custom"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def __post_init__(self):
        if self.data.batch_size % self.train.grad_accum_steps:
            raise ConfigError(
                f"data.batch_size={self.data.batch_size} is not divisible by "
                f"train.grad_accum_steps={self.train.grad_accum_steps}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


# Validation helpers.


def _section(obj) -> str:
    return {ModelConfig: "model", DataConfig: "data", TrainConfig: "train"}[type(obj)]


def _check_positive(obj, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value <= 0:
            raise ConfigError(f"{_section(obj)}.{name}={value} is invalid: it must be positive")


def _check_fraction(obj, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{_section(obj)}.{name}={value} is invalid: it must be in [0, 1]")


def _check_choice(obj, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(obj, name)
    if value not in choices:
        raise ConfigError(
            f"{_section(obj)}.{name}={value!r} is invalid: choose one of {', '.join(choices)}"
        )


# Building configs from dicts, presets and overrides.

_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def config_from_dict(values: dict[str, Any], source: str = "config") -> Config:
    """Build a `Config` from `Config.to_dict()` output; unknown keys raise `ConfigError`."""
    unknown = set(values) - {"name", *_SECTIONS}
    if unknown:
        raise ConfigError(f"{source}: unknown sections {sorted(unknown)}; valid: name, {', '.join(_SECTIONS)}")
    sections = {}
    for section, section_class in _SECTIONS.items():
        section_values = dict(values.get(section, {}))
        valid = {field.name for field in dataclasses.fields(section_class)}
        unknown = set(section_values) - valid
        if unknown:
            raise ConfigError(
                f"{source}: unknown keys {', '.join(f'{section}.{k}' for k in sorted(unknown))}"
            )
        sections[section] = section_class(**section_values)
    return Config(name=values.get("name", "custom"), **sections)


def load_config_file(path: str | Path) -> Config:
    """Read a `config.json` written by `pact train`."""
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"config file {path} is not valid JSON: {error}") from None
    return config_from_dict(values, source=str(path))


def available_configs() -> list[str]:
    """Names of the presets in `pact.configs`, with dashes (maestro-small)."""
    import pact.configs

    return sorted(
        module.name.replace("_", "-")
        for module in pkgutil.iter_modules(pact.configs.__path__)
        if not module.name.startswith("_")
    )


def get_preset(name: str) -> Config:
    """Return the named preset from `pact.configs`."""
    if name not in available_configs():
        raise ConfigError(f"unknown config {name!r}; available: {', '.join(available_configs())}")
    module = importlib.import_module(f"pact.configs.{name.replace('-', '_')}")
    config = module.get_config()
    return dataclasses.replace(config, name=name)


def _parse_value(text: str, annotation: Any, key: str) -> Any:
    """Convert an override's text to the field's type (int, float, bool, str or None)."""
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if type(None) in options and text.lower() in ("none", "null"):
        return None
    for option in options:
        if option is bool:
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
        elif option in (int, float):
            try:
                return option(text)
            except ValueError:
                continue
        elif option is str:
            return text
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"override {key}={text!r} is invalid: expected {expected}")


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply `section.key=value` overrides; each value is parsed as the field's type."""
    values = config.to_dict()
    for override in overrides:
        key, separator, text = override.partition("=")
        section, _, field_name = key.strip().partition(".")
        if not separator or section not in _SECTIONS or not field_name:
            raise ConfigError(
                f"override {override!r} is invalid: write section.key=value, for example "
                "model.num_layers=4 (sections: model, data, train)"
            )
        field_types = typing.get_type_hints(_SECTIONS[section])
        if field_name not in field_types:
            raise ConfigError(
                f"unknown config key {key!r}; valid {section} keys: {', '.join(sorted(field_types))}"
            )
        values[section][field_name] = _parse_value(text.strip(), field_types[field_name], key)
    return config_from_dict(values, source="overrides")


def load_config(name_or_path: str, overrides: list[str] | None = None) -> Config:
    """Load a preset by name, or a saved `config.json` by path, then apply overrides."""
    if name_or_path.endswith(".json") or Path(name_or_path).is_file():
        config = load_config_file(name_or_path)
    else:
        config = get_preset(name_or_path)
    return apply_overrides(config, overrides or [])
