"""A run directory, and loading a trained model from one.

    RUN_DIR/
      config.json      the resolved `Config` (model, data, train)
      tokenizer.json   the tokenizer spec the model was trained with
      checkpoints/     orbax checkpoints (see `pact.checkpoint`)
      metrics.jsonl    one JSON object per logged training or validation step
      tensorboard/     TensorBoard event files

Sampling and evaluation need nothing but this directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from pact.config import Config, config_from_dict
from pact.errors import CheckpointError, TokenizerError, TokenizerMismatchError


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def tokenizer_path(self) -> Path:
        return self.path / "tokenizer.json"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tensorboard"

    def exists(self) -> bool:
        return self.config_path.is_file()

    def require(self) -> RunDir:
        """Raise `CheckpointError` unless this is a run directory written by `pact train`."""
        if not self.path.is_dir():
            raise CheckpointError(f"run directory {self.path} not found; train one with `pact train`")
        missing = [p.name for p in (self.config_path, self.tokenizer_path) if not p.is_file()]
        if missing:
            raise CheckpointError(
                f"{self.path} is not a pact run directory: {', '.join(missing)} missing"
            )
        return self

    def read_config(self) -> Config:
        return config_from_dict(json.loads(self.config_path.read_text()), source=str(self.config_path))

    def read_tokenizer_spec(self) -> dict[str, Any]:
        return json.loads(self.tokenizer_path.read_text())

    def write_json(self, path: Path, values: Any) -> None:
        """Write JSON atomically: a crash mid-write leaves the old file, never a truncated one."""
        self.path.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(path.suffix + ".tmp")
        temporary.write_text(json.dumps(values, indent=2) + "\n")
        os.replace(temporary, path)

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.is_file():
            return []
        rows = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                # A line cut by a crash mid-write; the rows before it are intact.
                continue
        return rows


@dataclasses.dataclass
class LoadedModel:
    model: Any  # pact.model.PerceiverAR
    config: Config
    tokenizer: Any  # pact.encodings.Tokenizer
    step: int


# The word that names the bundled model where a path is expected (`pact train --init-from`).
BUNDLED_MODEL = "bundled"


def resolve_run_dir(run_dir: str | os.PathLike | None) -> Path:
    """Return `run_dir`, or the folder of the model bundled with pact when it is None."""
    if run_dir is None:
        from pact.export import embedded_model_dir

        return embedded_model_dir()
    return Path(run_dir)


def load_model(run_dir: str | os.PathLike | None, step: int | None = None, mesh=None) -> LoadedModel:
    """Build the model of a run and restore its newest (or given) checkpoint's parameters.

    `run_dir` may also be an exported model (`pact.export`), and None means the bundled model.
    The parameters are laid out on `mesh` (a `jax.sharding.Mesh`, see `pact.sharding`), or
    placed on this process's first device without one, whatever mesh wrote the checkpoint.
    """
    import jax
    from flax import nnx

    from pact.checkpoint import Checkpointer
    from pact.encodings import tokenizer_from_spec
    from pact.export import is_exported, load_exported_params
    from pact.model import PerceiverAR
    from pact.sharding import tree_shardings, with_shardings

    run = RunDir(resolve_run_dir(run_dir)).require()
    config = run.read_config()
    tokenizer = tokenizer_from_spec(run.read_tokenizer_spec(), source=f"run {run.path}")
    if config.model.vocab_size != tokenizer.vocab_size:
        raise CheckpointError(
            f"run {run.path}: model.vocab_size={config.model.vocab_size} but its tokenizer has "
            f"{tokenizer.vocab_size} ids"
        )
    exported = is_exported(run.path)
    if not exported and not run.checkpoint_dir.is_dir():
        raise CheckpointError(f"run {run.path} has no checkpoints yet; train it with `pact train`")

    model = nnx.eval_shape(lambda: PerceiverAR(config.model, rngs=nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(model)
    abstract_params = nnx.to_pure_dict(abstract_state)
    if mesh is None:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        shardings = jax.tree.map(lambda _: device, abstract_params)
    else:
        shardings = tree_shardings(mesh, abstract_params)

    if exported:
        restored_step, params = load_exported_params(run.path, abstract_params)
        if step is not None and step != restored_step:
            raise CheckpointError(
                f"exported model {run.path} contains step {restored_step} only, not step {step}; omit --step"
            )
        params = jax.device_put(params, shardings)
    else:
        checkpointer = Checkpointer(run.checkpoint_dir, read_only=True)
        try:
            restored = checkpointer.restore_latest(with_shardings(abstract_params, shardings), None, step=step)
        finally:
            checkpointer.close()
        if restored is None:
            raise CheckpointError(f"run {run.path} has no checkpoints yet; train it with `pact train`")
        restored_step, params, _, _ = restored
    model = nnx.merge(graphdef, jax.tree.map(jax.numpy.asarray, params))
    return LoadedModel(model=model, config=config, tokenizer=tokenizer, step=restored_step)


def describe_run(run_dir: str | os.PathLike | None) -> dict[str, Any]:
    """Config, tokenizer, parameter count, checkpoint steps and latest metrics of a run."""
    from flax import nnx

    from pact.encodings import tokenizer_from_spec
    from pact.export import is_exported, read_export_info
    from pact.model import PerceiverAR, count_parameters

    run = RunDir(resolve_run_dir(run_dir)).require()
    config = run.read_config()
    tokenizer_spec = run.read_tokenizer_spec()
    try:
        token_unit = tokenizer_from_spec(tokenizer_spec, source=f"run {run.path}").token_unit
    except (TokenizerError, TokenizerMismatchError):
        # The description still helps when the tokenizer's plug-in is gone or has changed.
        token_unit = "token"
    if is_exported(run.path):
        steps = [int(read_export_info(run.path)["step"])]
    elif run.checkpoint_dir.is_dir():
        steps = sorted(int(p.name) for p in run.checkpoint_dir.iterdir() if p.name.isdigit())
    else:
        steps = []
    rows = run.read_metrics()
    train_rows = [row for row in rows if row.get("split") == "train"]
    validation_rows = [row for row in rows if row.get("split") == "validation"]
    parameters = 0
    if config.model.vocab_size is not None:
        parameters = count_parameters(nnx.eval_shape(lambda: PerceiverAR(config.model, rngs=nnx.Rngs(0))))
    return {
        "run_dir": str(run.path),
        "config": config.to_dict(),
        "tokenizer": tokenizer_spec,
        "token_unit": token_unit,
        "parameters": parameters,
        "checkpoint_steps": steps,
        "exported": is_exported(run.path),
        "latest_train": train_rows[-1] if train_rows else None,
        "latest_validation": validation_rows[-1] if validation_rows else None,
    }
