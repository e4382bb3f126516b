"""The device mesh, and how parameters, optimizer state and batches are laid out on it.

The mesh has two named axes:

    data   data parallelism: each position along it gets its own rows of every batch.
    fsdp   fully sharded data parallelism: each position also gets its own rows. Parameters
           and optimizer state are split across it, so each device stores 1/fsdp of them.

A batch [B, ...] is split along B over both axes together, so every device of a
`data x fsdp` mesh scores B / (data * fsdp) rows. A parameter or optimizer-state array is
split along its largest dimension that the fsdp size divides, and replicated when no
dimension does or the fsdp size is 1. The rule reads only shapes, so the model code carries no
sharding annotations and any pytree of arrays (parameters, Adam moments) gets a consistent
layout.

Inside a step the parameters are all-gathered before the forward pass (`gather_parameters`),
and each micro-batch's gradients are constrained back to the fsdp layout, so parameters,
gradient sums and optimizer state stay split between steps. On CPU, XLA compiles that
constraint into an all-reduce followed by each device's slice, not a reduce-scatter.

One device is the same code with a 1x1 mesh. The axes use `AxisType.Auto`: the jitted steps
fix the shardings of their inputs and outputs, and XLA's partitioner inserts the collectives
in between.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from pact.errors import ConfigError

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)
"""Mesh axes that split the batch dimension."""


CONFIG_MESH_KEYS = ("train.mesh_data", "train.mesh_fsdp")
"""Names of the two mesh sizes in error messages; commands with their own flags pass theirs."""


def mesh_shape(mesh_data: int, mesh_fsdp: int, device_count: int,
               names: tuple[str, str] = CONFIG_MESH_KEYS) -> tuple[int, int]:
    """Resolve `(data, fsdp)` for `device_count` devices; mesh_data 0 takes the rest.

    Raises `ConfigError` naming both numbers when the product does not match.
    """
    data_name, fsdp_name = names
    if mesh_fsdp < 1:
        raise ConfigError(f"{fsdp_name}={mesh_fsdp} is invalid: it must be positive")
    if mesh_data < 0:
        raise ConfigError(f"{data_name}={mesh_data} is invalid: use 0 (every device left) or more")
    if mesh_data == 0:
        if device_count % mesh_fsdp:
            raise ConfigError(
                f"{fsdp_name}={mesh_fsdp} does not divide the {device_count} available devices; "
                f"set {fsdp_name} to a divisor of {device_count}"
            )
        return device_count // mesh_fsdp, mesh_fsdp
    if mesh_data * mesh_fsdp != device_count:
        raise ConfigError(
            f"the mesh {data_name}={mesh_data} x {fsdp_name}={mesh_fsdp} has "
            f"{mesh_data * mesh_fsdp} devices but {device_count} are available; set "
            f"{data_name}=0 to use every device, or make the product match"
        )
    return mesh_data, mesh_fsdp


def make_mesh(mesh_data: int = 0, mesh_fsdp: int = 1, devices: Sequence[jax.Device] | None = None, *,
              names: tuple[str, str] = CONFIG_MESH_KEYS) -> Mesh:
    """Build a `data x fsdp` mesh over `devices` (default: every device of every process)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(mesh_data, mesh_fsdp, len(devices), names)
    return jax.make_mesh(shape, BATCH_AXES, axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)


def batch_axis_size(mesh: Mesh) -> int:
    """Devices that split the batch dimension: data x fsdp."""
    return math.prod(mesh.shape[axis] for axis in BATCH_AXES)


def check_batch_size(mesh: Mesh, batch_size: int, grad_accum_steps: int = 1, *,
                     name: str = "data.batch_size") -> None:
    """Raise `ConfigError` unless every micro-batch splits evenly over the mesh's batch axes."""
    devices = batch_axis_size(mesh)
    multiple = devices * grad_accum_steps
    if batch_size % multiple == 0:
        return
    if grad_accum_steps == 1:
        raise ConfigError(
            f"{name}={batch_size} is not divisible by the {devices} devices of the "
            f"{mesh.shape[DATA_AXIS]}x{mesh.shape[FSDP_AXIS]} mesh; use a multiple of {devices}"
        )
    raise ConfigError(
        f"{name}={batch_size} is not divisible by train.grad_accum_steps={grad_accum_steps} x "
        f"{devices} devices of the {mesh.shape[DATA_AXIS]}x{mesh.shape[FSDP_AXIS]} mesh = {multiple}; "
        f"use a multiple of {multiple}"
    )


# ---------------------------------------------------------------------------------------------
# Parameter and optimizer-state layout.


def fsdp_spec(shape: Sequence[int], fsdp_size: int) -> PartitionSpec:
    """Split the largest dimension that `fsdp_size` divides; replicate if none does.

    Ties go to the later dimension, the output side of a [in, out] kernel.
    """
    if fsdp_size == 1:
        return PartitionSpec()
    candidates = [(size, axis) for axis, size in enumerate(shape) if size % fsdp_size == 0]
    if not candidates:
        return PartitionSpec()
    _, axis = max(candidates)
    return PartitionSpec(*([None] * axis), FSDP_AXIS)


def tree_shardings(mesh: Mesh, tree: Any) -> Any:
    """`NamedSharding` per array leaf of `tree` (arrays or `jax.ShapeDtypeStruct`s), by `fsdp_spec`."""
    fsdp_size = mesh.shape[FSDP_AXIS]
    return jax.tree.map(lambda leaf: NamedSharding(mesh, fsdp_spec(np.shape(leaf), fsdp_size)), tree)


def with_shardings(tree: Any, shardings: Any) -> Any:
    """`jax.ShapeDtypeStruct` tree with the given shardings, as Orbax restores into."""
    return jax.tree.map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
        tree, shardings,
    )


@dataclasses.dataclass(frozen=True)
class StepShardings:
    """Shardings of a train or eval step's inputs and outputs on one mesh."""

    mesh: Mesh
    params: Any
    """Tree of `NamedSharding`, or one sharding for the whole tree."""
    opt_state: Any
    batch: NamedSharding
    """Rows of a batch [B, ...] split over `BATCH_AXES`."""
    replicated: NamedSharding
    """Scalars and metrics: a full copy on every device."""

    @classmethod
    def for_trees(cls, mesh: Mesh, params: Any, opt_state: Any = None) -> StepShardings:
        """Layouts from `tree_shardings` for parameter and optimizer-state trees (or their shapes)."""
        return cls(
            mesh=mesh,
            params=tree_shardings(mesh, params),
            opt_state=None if opt_state is None else tree_shardings(mesh, opt_state),
            batch=batch_sharding(mesh),
            replicated=NamedSharding(mesh, PartitionSpec()),
        )

    @classmethod
    def single_device(cls, device: jax.Device | None = None) -> StepShardings:
        """Everything on one device: the 1x1 mesh."""
        mesh = make_mesh(1, 1, [device or jax.local_devices()[0]])
        replicated = NamedSharding(mesh, PartitionSpec())
        return cls(mesh=mesh, params=replicated, opt_state=replicated, batch=batch_sharding(mesh),
                   replicated=replicated)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def gather_parameters(params: Any, shardings: StepShardings) -> Any:
    """All-gather FSDP-split parameters inside a jitted step, before the model uses them.

    Every layer then computes data parallel on the rows its device holds. Left to itself,
    XLA's partitioner may instead split activations along the parameters' split dimension,
    which conflicts with the batch split and makes it replicate whole tensors. The cost is one
    full parameter copy per device while a step runs.
    """
    return jax.lax.with_sharding_constraint(params, shardings.replicated)


# ---------------------------------------------------------------------------------------------
# Batches: each process loads only the rows its own devices hold.


def process_rows(sharding: NamedSharding, batch_size: int) -> np.ndarray:
    """Return the rows of a global batch [B, ...] on this process's devices, ascending (int64).

    These are the rows a process loads; `global_batch` places them in that order, as
    `jax.make_array_from_process_local_data` expects.
    """
    rows: set[int] = set()
    for index in sharding.addressable_devices_indices_map((batch_size,)).values():
        rows.update(range(*index[0].indices(batch_size)))
    return np.array(sorted(rows), dtype=np.int64)


def global_batch(local: dict[str, np.ndarray], sharding: NamedSharding, batch_size: int) -> dict[str, jax.Array]:
    """Assemble one global `jax.Array` [B, ...] per key from this process's rows (`process_rows`)."""
    return {
        name: jax.make_array_from_process_local_data(sharding, value, (batch_size, *value.shape[1:]))
        for name, value in local.items()
    }
