"""Orbax checkpoints of a training run: parameters, optimizer state and progress.

Each checkpoint is a step folder under RUN_DIR/checkpoints with three items:

    params     the model parameters as a nested dict of arrays (`nnx.to_pure_dict`)
    opt_state  the optax optimizer state
    progress   JSON: step, target tokens seen, wall time

Orbax writes each step into a temporary folder and renames it when complete, so a crash while
saving never leaves a step that looks finished. A step that fails to restore (a truncated or
damaged file) is reported and the previous step is used instead.

Arrays are restored into the shardings of the target tree that the caller passes (see
`pact.sharding.with_shardings`), not the ones they were saved with. A checkpoint written on
one mesh therefore restores onto any other, for example from 8 devices with FSDP onto 1. In a
multi-process run every process calls `save` and `restore_latest`: each writes and reads the
shards its devices hold, process 0 writes the metadata and the progress JSON, and Orbax
synchronises them. The checkpoint folder must then be on a file system that every process
sees.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from pact.errors import CheckpointError

log = logging.getLogger(__name__)


class Checkpointer:
    """Save and restore the checkpoints of one run directory."""

    def __init__(self, directory: str | Path, *, keep: int = 3, read_only: bool = False):
        self.directory = Path(directory).absolute()
        # Orbax's own read_only mode logs warnings about the options it overrides; readers
        # simply never call `save`.
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=not read_only,
            # Synchronous saves: a checkpoint is complete when `save` returns, so Ctrl-C or a
            # crash right after it cannot lose it. Saves are small next to the steps between them.
            enable_async_checkpointing=False,
        )
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("params", "opt_state", "progress")
        )

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, step: int, params: Any, opt_state: Any, progress: dict[str, Any]) -> None:
        self.manager.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params),
                opt_state=ocp.args.StandardSave(opt_state),
                progress=ocp.args.JsonSave(progress),
            ),
            force=True,
        )
        self.manager.wait_until_finished()

    def _restore(self, step: int, abstract_params: Any, abstract_opt_state: Any | None):
        items = {
            "params": ocp.args.StandardRestore(abstract_params),
            "progress": ocp.args.JsonRestore(),
        }
        if abstract_opt_state is not None:
            items["opt_state"] = ocp.args.StandardRestore(abstract_opt_state)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored.params, restored.get("opt_state"), restored.progress

    def restore_latest(self, abstract_params: Any, abstract_opt_state: Any | None = None,
                       step: int | None = None):
        """Restore (step, params, opt_state, progress) from the newest readable checkpoint.

        With `step` given, restore exactly that step. Otherwise a newest step that fails to read
        is logged and skipped in favour of the one before it. Returns None when the run has no
        checkpoint. `abstract_*` are trees of `jax.ShapeDtypeStruct` with the target shardings.
        """
        candidates = [step] if step is not None else list(reversed(self.steps()))
        if step is not None and step not in self.steps():
            raise CheckpointError(
                f"no checkpoint at step {step} in {self.directory}; available steps: {self.steps()}"
            )
        failures = []
        for candidate in candidates:
            try:
                params, opt_state, progress = self._restore(candidate, abstract_params, abstract_opt_state)
            except (ValueError, KeyError, OSError, TypeError) as error:
                # Orbax and TensorStore report damaged files with these types; the message says which.
                failures.append(f"step {candidate}: {type(error).__name__}: {error}")
                log.warning("checkpoint at step %d in %s is unreadable (%s); trying an earlier one",
                            candidate, self.directory, error)
                continue
            return candidate, params, opt_state, progress
        if failures:
            raise CheckpointError(
                f"no readable checkpoint in {self.directory}: " + "; ".join(failures)
            )
        return None

    def close(self) -> None:
        self.manager.close()

