"""Mesh shapes, the FSDP layout rule, per-process rows and multi-process options, on one device."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from pact.config import apply_overrides, get_preset
from pact.data import training_dataset
from pact.distributed import DistributedOptions, _bind_address
from pact.errors import ConfigError
from pact.sharding import (
    FSDP_AXIS, StepShardings, check_batch_size, fsdp_spec, make_mesh, mesh_shape, process_rows,
)
from pact.train import _check_resume_config


@pytest.mark.parametrize("data, fsdp, devices, expected", [
    (0, 1, 8, (8, 1)), (0, 4, 8, (2, 4)), (2, 4, 8, (2, 4)), (1, 8, 8, (1, 8)), (0, 1, 1, (1, 1)),
])
def test_mesh_shape_resolves(data, fsdp, devices, expected):
    assert mesh_shape(data, fsdp, devices) == expected


@pytest.mark.parametrize("data, fsdp, devices, message", [
    (2, 2, 8, "has 4 devices but 8 are available"),
    (0, 3, 8, "train.mesh_fsdp=3 does not divide the 8 available devices"),
    (0, 0, 8, "train.mesh_fsdp=0 is invalid"),
    (-1, 1, 8, "train.mesh_data=-1 is invalid"),
])
def test_mesh_shape_rejects(data, fsdp, devices, message):
    with pytest.raises(ConfigError, match=message):
        mesh_shape(data, fsdp, devices)


def test_batch_must_divide_devices_and_accumulation():
    mesh = make_mesh(1, 1)
    check_batch_size(mesh, 6, 3)
    with pytest.raises(ConfigError, match=r"data.batch_size=6 is not divisible by train.grad_accum_steps=4 "
                                          r"x 1 devices of the 1x1 mesh = 4"):
        check_batch_size(mesh, 6, 4)


@pytest.mark.parametrize("shape, size, expected", [
    ((32, 128), 8, PartitionSpec(None, FSDP_AXIS)),  # largest divisible dimension
    ((128, 32), 8, PartitionSpec(FSDP_AXIS)),
    ((64, 64), 8, PartitionSpec(None, FSDP_AXIS)),  # ties go to the later dimension
    ((258, 32), 8, PartitionSpec(None, FSDP_AXIS)),  # 258 does not divide by 8
    ((3, 5), 8, PartitionSpec()),  # nothing divides: replicated
    ((), 8, PartitionSpec()),  # scalars such as Adam's step count
    ((32, 128), 1, PartitionSpec()),
])
def test_fsdp_spec_rule(shape, size, expected):
    assert fsdp_spec(shape, size) == expected


def test_single_process_holds_every_row():
    shardings = StepShardings.single_device()
    np.testing.assert_array_equal(process_rows(shardings.batch, 8), np.arange(8))


@pytest.mark.parametrize("options, message", [
    (DistributedOptions(coordinator_address="127.0.0.1:1234"), "needs --num-processes, --process-id as well"),
    (DistributedOptions(coordinator_address="node0", num_processes=2, process_id=0), "write HOST:PORT"),
    (DistributedOptions(coordinator_address="h:1", num_processes=2, process_id=2), "use 0 to 1"),
    (DistributedOptions(coordinator_address="h:1", num_processes=0, process_id=0), "--num-processes=0"),
    (DistributedOptions(auto_detect=True, heartbeat_timeout=0), "--heartbeat-timeout=0"),
])
def test_distributed_options_rejected(options, message):
    with pytest.raises(ConfigError, match=message):
        options.validate()


def test_single_process_needs_no_options():
    options = DistributedOptions()
    options.validate()
    assert not options.enabled


def test_loopback_coordinator_binds_loopback_only():
    assert _bind_address("127.0.0.1:8476") == "127.0.0.1:8476"
    assert _bind_address("localhost:8476") == "localhost:8476"
    # Another host must reach the coordinator, so JAX's default (every interface) stays.
    assert _bind_address("10.0.0.1:8476") is None


def test_resume_may_change_mesh(tmp_path):
    saved = apply_overrides(get_preset("tiny"), ["train.mesh_fsdp=8", "train.mesh_data=1"])
    requested = apply_overrides(get_preset("tiny"), ["train.mesh_fsdp=1", "train.steps=500"])
    resumed = _check_resume_config(saved, requested, tmp_path)
    assert (resumed.train.mesh_data, resumed.train.mesh_fsdp, resumed.train.steps) == (0, 1, 500)
    with pytest.raises(ConfigError, match="train.seed"):
        _check_resume_config(saved, apply_overrides(requested, ["train.seed=3"]), tmp_path)


def test_one_device_is_a_1x1_mesh():
    mesh = make_mesh(devices=jax.devices()[:1])
    assert dict(mesh.shape) == {"data": 1, "fsdp": 1}


def test_process_rows_of_batch_match_full_batch():
    rng = np.random.default_rng(0)
    documents = [{"tokens": np.append(rng.integers(2, 30, size=n), 1).astype(np.int32)}
                 for n in rng.integers(3, 120, size=12)]
    full = training_dataset(documents, context=48, num_latents=12, batch_size=8, seed=0)
    rows = [2, 3, 6, 7]
    part = training_dataset(documents, context=48, num_latents=12, batch_size=8, seed=0, rows=rows)
    for step in (0, 5, 17):
        for name in ("inputs", "targets"):
            np.testing.assert_array_equal(part[step][name], full[step][name][rows])
