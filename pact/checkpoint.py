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
import resource
import shutil
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from pact.errors import CheckpointError, WriteError, no_room_cause

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
        """Write the checkpoint of `step`; raise `WriteError` if the device has no room for it.

        A failed save leaves the earlier checkpoints as they were and removes its own
        temporary folder, which would otherwise keep the space it took.
        """
        self._check_room(step, params, opt_state)
        try:
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
        except Exception as error:
            cause = no_room_cause(error)
            if cause is None:
                raise
            for partial in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
                shutil.rmtree(partial, ignore_errors=True)
            intact = ", ".join(map(str, self.steps())) or "none"
            raise WriteError(
                f"could not write the checkpoint of step {step} in {self.directory}: "
                f"{cause.strerror}. Checkpoints intact: steps {intact}. Free space and run the "
                "same command again to resume from the newest one"
            ) from error

    def _check_room(self, step: int, params: Any, opt_state: Any) -> None:
        """Raise `WriteError` before writing if the checkpoint cannot fit.

        Orbax writes through TensorStore threads; when a write fails halfway they print
        tracebacks of their own, so refusing up front gives the cleaner error. The estimate is
        the uncompressed size plus 10% and 64 KiB, an upper bound: Orbax compresses with zstd.
        """
        item_bytes = [sum(getattr(leaf, "nbytes", 0) for leaf in jax.tree.leaves(tree))
                      for tree in (params, opt_state)]
        needed = int(sum(item_bytes) * 1.1) + 2**16
        usage = shutil.disk_usage(self.directory)
        intact = ", ".join(map(str, self.steps())) or "none"
        if usage.free < needed:
            raise WriteError(
                f"could not write the checkpoint of step {step} in {self.directory}: it needs about "
                f"{needed / 1e6:.1f} MB and the device has {usage.free / 1e6:.1f} MB free. "
                f"Checkpoints intact: steps {intact}. Free space and run the same command again "
                "to resume from the newest one"
            )
        file_size_limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if file_size_limit != resource.RLIM_INFINITY and file_size_limit < max(item_bytes):
            raise WriteError(
                f"could not write the checkpoint of step {step} in {self.directory}: the file-size "
                f"limit (ulimit -f) is {file_size_limit:,} bytes and the checkpoint holds arrays of "
                f"{max(item_bytes):,} bytes. Checkpoints intact: steps {intact}. Raise the limit "
                "and run the same command again"
            )

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
                       step: int | None = None, set_aside_damaged: bool = False):
        """Restore (step, params, opt_state, progress) from the newest readable checkpoint.

        With `step` given, restore exactly that step. Otherwise a newest step that fails to read
        is logged and skipped in favour of the one before it. With `set_aside_damaged` (a run
        that will save again), skipped steps are renamed to `<step>.damaged` so that the step
        can be written anew. Returns None when the run has no checkpoint. `abstract_*` are
        trees of `jax.ShapeDtypeStruct` with the target shardings.
        """
        candidates = [step] if step is not None else list(reversed(self.steps()))
        if step is not None and step not in self.steps():
            raise CheckpointError(
                f"no checkpoint at step {step} in {self.directory}; available steps: {self.steps()}"
            )
        failures = []
        for candidate in candidates:
            # A checkpoint of another model shape is a mismatch, not damage: no earlier step
            # of the same run would fit either, so say what differs.
            self.check_shapes(candidate, abstract_params)
            try:
                params, opt_state, progress = self._restore(candidate, abstract_params, abstract_opt_state)
            except Exception as error:  # noqa: BLE001 - TensorStore raises bare Exceptions for bad bytes
                # TensorStore's own message, in the cause, names the file and the byte range.
                summary = str(error.__cause__ or error).splitlines()[0][:300]
                failures.append((candidate, summary))
                log.warning("the checkpoint of step %d in %s is damaged or incomplete (%s); "
                            "trying an earlier one", candidate, self.directory, summary)
                continue
            if failures:
                log.warning("restored the checkpoint of step %d instead", candidate)
                if set_aside_damaged:
                    self._set_aside([failed_step for failed_step, _ in failures])
            return candidate, params, opt_state, progress
        if failures:
            raise CheckpointError(
                f"no readable checkpoint in {self.directory}: "
                + "; ".join(f"step {failed_step}: {summary}" for failed_step, summary in failures)
            )
        return None

    def _set_aside(self, steps: list[int]) -> None:
        for step in steps:
            source = self.directory / str(step)
            target = self.directory / f"{step}.damaged"
            if target.exists():
                shutil.rmtree(target)
            source.rename(target)
            log.warning("moved the damaged checkpoint %s to %s", source, target)
        self.manager.reload()

    def check_shapes(self, step: int, abstract_params: Any) -> None:
        """Raise `CheckpointError` if the parameters saved at `step` differ in names or shapes."""
        try:
            saved = ocp.StandardCheckpointer().metadata(self.directory / str(step) / "params").item_metadata
        except Exception:  # noqa: BLE001 - unreadable metadata is damage; restoring reports it
            return
        differences = shape_differences(parameter_shapes(saved), parameter_shapes(abstract_params))
        if not differences:
            return
        raise CheckpointError(
            f"the checkpoint of step {step} in {self.directory} holds another model than the "
            f"config describes ({len(differences)} parameters differ, for example "
            f"{'; '.join(differences[:3])}); use the config.json that was trained with it"
        )

    def close(self) -> None:
        self.manager.close()


def parameter_name(path) -> str:
    """Return the dotted name of a parameter's tree path, for example "blocks.0.mlp.up.kernel"."""
    return ".".join(str(getattr(key, "key", key)) for key in path)


def parameter_shapes(params: Any) -> dict[str, tuple[int, ...]]:
    """Return the shape of every leaf of a parameter tree, by dotted name."""
    return {parameter_name(path): tuple(leaf.shape) for path, leaf in jax.tree_util.tree_leaves_with_path(params)}


def shape_differences(saved: dict[str, tuple], expected: dict[str, tuple]) -> list[str]:
    """Describe each parameter whose saved shape differs from the expected one, or is absent on one side."""
    return [
        f"{name}: {saved.get(name, 'absent')} saved, {expected.get(name, 'absent')} expected"
        for name in sorted(set(saved) | set(expected))
        if saved.get(name) != expected.get(name)
    ]
