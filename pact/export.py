"""Exported models: a run's parameters at one step, without optimizer state, in one file.

    MODEL_DIR/
      config.json      the run's `Config`
      tokenizer.json   the run's tokenizer spec
      params.npz       float32 parameters, one array per parameter path ("blocks.0.mlp.up.kernel")
      export.json      the step, the source run and the parameter count
      metrics.jsonl    the run's validation rows

An exported folder is a run directory for reading: `pact sample`, `pact eval benchmark` and
`pact info` accept it wherever they accept a run directory. The model bundled with pact
(`pact/assets/model`) is one; commands use it when no run directory is given.
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from pact.atomic_files import atomic_output
from pact.errors import CheckpointError
from pact.run import RunDir

PARAMS_FILE = "params.npz"
EXPORT_FILE = "export.json"
EXPORT_FORMAT = 1


def embedded_model_dir() -> Path:
    """Folder of the model bundled with pact (see docs/model-card.md)."""
    return Path(str(resources.files("pact") / "assets" / "model"))


def is_exported(path: str | os.PathLike) -> bool:
    return (Path(path) / PARAMS_FILE).is_file()


def read_export_info(path: str | os.PathLike) -> dict[str, Any]:
    info_path = Path(path) / EXPORT_FILE
    try:
        return json.loads(info_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"exported model {path}: cannot read {info_path.name} ({error}); export it again") from error


def export_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike, *, step: int | None = None) -> dict[str, Any]:
    """Write the parameters of a run's newest (or given) checkpoint to `out_dir`; return export.json's values.

    Every file is written atomically, so an interrupted export leaves no half-written file.
    """
    import jax

    from flax import nnx

    from pact.checkpoint import parameter_name
    from pact.model import count_parameters
    from pact.run import load_model

    run = RunDir(run_dir).require()
    loaded = load_model(run.path, step=step)
    params = nnx.to_pure_dict(nnx.state(loaded.model))
    arrays = {parameter_name(path): np.asarray(leaf, dtype=np.float32)
              for path, leaf in jax.tree_util.tree_leaves_with_path(params)}

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_output(out / PARAMS_FILE) as temporary:
        with open(temporary, "wb") as file:
            np.savez(file, **arrays)
    for name in ("config.json", "tokenizer.json"):
        with atomic_output(out / name) as temporary:
            shutil.copyfile(run.path / name, temporary)
    validation = [row for row in run.read_metrics() if row.get("split") == "validation" and row["step"] <= loaded.step]
    with atomic_output(out / "metrics.jsonl") as temporary:
        Path(temporary).write_text("".join(json.dumps(row) + "\n" for row in validation))
    info = {
        "format": EXPORT_FORMAT,
        "step": loaded.step,
        "source_run": str(run.path),
        "parameters": count_parameters(loaded.model),
    }
    with atomic_output(out / EXPORT_FILE) as temporary:
        Path(temporary).write_text(json.dumps(info, indent=2) + "\n")
    return info


def load_exported_params(path: str | os.PathLike, abstract_params: Any) -> tuple[int, Any]:
    """Return (step, parameters) of an exported model, shaped like `abstract_params` (a pure dict).

    Raises `CheckpointError` naming the file when it is unreadable or contains another model.
    """
    import jax

    from pact.checkpoint import parameter_name, parameter_shapes, shape_differences

    info = read_export_info(path)
    if info.get("format") != EXPORT_FORMAT:
        raise CheckpointError(
            f"exported model {path} has format {info.get('format')!r}; this pact reads format "
            f"{EXPORT_FORMAT}, so export it again with this version"
        )
    params_path = Path(path) / PARAMS_FILE
    try:
        with np.load(params_path) as file:
            arrays = {name: file[name] for name in file.files}
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot read {params_path} ({error}); export the model again") from error

    differences = shape_differences({name: array.shape for name, array in arrays.items()},
                                    parameter_shapes(abstract_params))
    if differences:
        raise CheckpointError(
            f"{params_path} contains another model than its config.json describes ({len(differences)} "
            f"parameters differ, for example {'; '.join(differences[:3])}); export the model again"
        )
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(abstract_params)
    leaves = [arrays[parameter_name(path)].astype(leaf.dtype) for path, leaf in leaves_with_paths]
    return int(info["step"]), jax.tree_util.tree_unflatten(treedef, leaves)
