"""Training on device meshes and in several processes gives the one-device result, on CPU.

The reference trains on one device in this process. Runs on 8 devices (XLA's host-platform
device count) and in two processes on loopback need a fresh JAX, so they run as subprocesses.
Every model computes in float32 here: devices and processes sum gradients and losses in another
order than one device does, so results agree to float32 rounding, which Adam's normalised
updates can enlarge. Measured on every topology below after 4 steps: losses within 9e-8
relative and parameters within 1.5e-5 absolute (the learning rate is 2e-3). The tolerances
below leave a margin of about 100 and 7 times that.

With bfloat16 matmul inputs (the presets' default) the same runs differ by up to about 4e-3
in parameters after 4 steps, because a different summation order can round an activation to
a neighbouring bfloat16 value.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from pact.config import apply_overrides, get_preset
from pact.errors import ConfigError
from pact.train import train_and_evaluate

TESTS = Path(__file__).resolve().parent

LOSS_RTOL = 1e-5
PARAM_ATOL = 1e-4

# Batch 16 = 2 micro-batches x 8 devices. Dropout is on, so every layout must draw the same
# masks. The learning rate is constant (no warm-up, no decay), so a run's first steps do not
# depend on train.steps.
OVERRIDES = [
    "model.max_context=96", "model.num_latents=24", "model.num_channels=32", "model.num_heads=2",
    "model.num_layers=1", "model.dropout=0.1", "model.cross_attend_dropout=0.5",
    "model.compute_dtype=float32", "data.batch_size=16", "train.grad_accum_steps=2",
    "train.steps=4", "train.warmup_steps=0", "train.end_learning_rate_fraction=1.0",
    "train.checkpoint_every=2", "train.eval_every=4", "train.eval_batches=1", "train.log_every=1",
]

HEARTBEAT_SECONDS = 10


@pytest.fixture(scope="module")
def small_text_dataset(pg19_mini, tmp_path_factory) -> Path:
    """The pg19-mini books cut to their first few kilobytes, encoded with `bytes`."""
    from pact.dataset_writer import encode_dataset

    books = tmp_path_factory.mktemp("books")
    for split, size in (("train", 20_000), ("validation", 4_000), ("test", 2_000)):
        (books / split).mkdir()
        for path in sorted((pg19_mini / split).glob("*.txt")):
            # Cut after a line break, which never splits a multi-byte character.
            data = path.read_bytes()[:size]
            (books / split / path.name).write_bytes(data[:data.rindex(b"\n") + 1])
    summary = encode_dataset(books, tmp_path_factory.mktemp("data"), name="pg19_cut", tokenizer="bytes",
                             workers=1, show_progress=False)
    return summary.path


def _overrides(dataset: Path, *extra: str) -> list[str]:
    return [*OVERRIDES, f"data.dataset={dataset}", *extra]


def _config(dataset: Path, *extra: str):
    return apply_overrides(get_preset("tiny"), _overrides(dataset, *extra))


@pytest.fixture(scope="module")
def reference_run(small_text_dataset, tmp_path_factory) -> Path:
    """4 steps on one device, with checkpoints at steps 2 and 4."""
    run_dir = tmp_path_factory.mktemp("one_device") / "run"
    train_and_evaluate(_config(small_text_dataset), run_dir, progress=False, devices=jax.devices()[:1])
    return run_dir


def _cut_at_step(run_dir: Path, destination: Path, step: int) -> Path:
    """A copy of `run_dir` without its checkpoints after `step`, as if stopped there."""
    shutil.copytree(run_dir, destination)
    for checkpoint in (destination / "checkpoints").iterdir():
        if checkpoint.name.isdigit() and int(checkpoint.name) > step:
            shutil.rmtree(checkpoint)
    return destination


def _device_env(count: int) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={count}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    return env


@pytest.fixture(scope="module")
def eight_device_runs(small_text_dataset, reference_run, tmp_path_factory) -> dict[str, Path]:
    """Runs on 8 devices: data parallel, FSDP, and FSDP resumed from the reference's step 2."""
    root = tmp_path_factory.mktemp("eight_devices")
    runs = {
        "data_parallel": root / "data_parallel",
        "fsdp": root / "fsdp",
        "fsdp_from_one_device": _cut_at_step(reference_run, root / "fsdp_from_one_device", 2),
    }
    jobs = [
        {"run_dir": str(runs["data_parallel"]), "overrides": _overrides(small_text_dataset, "train.mesh_data=8")},
        {"run_dir": str(runs["fsdp"]),
         "overrides": _overrides(small_text_dataset, "train.mesh_data=2", "train.mesh_fsdp=4")},
        {"run_dir": str(runs["fsdp_from_one_device"]),
         "overrides": _overrides(small_text_dataset, "train.mesh_data=1", "train.mesh_fsdp=8")},
    ]
    result = subprocess.run([sys.executable, str(TESTS / "sharded_runs.py"), json.dumps(jobs)],
                            env=_device_env(8), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("on 8 devices") == 3, result.stdout
    return runs


def _rows(run_dir: Path, split: str) -> dict[int, dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [row["step"] for row in rows if row["split"] == split]
    assert len(steps) == len(set(steps)), f"{run_dir}: repeated {split} rows {steps}"
    return {row["step"]: row for row in rows if row["split"] == split}


def _params(run_dir: Path, step: int) -> list[np.ndarray]:
    """Parameters of the checkpoint at `step`, restored onto this process's first device."""
    from flax import nnx

    from pact.run import load_model

    loaded = load_model(run_dir, step=step)
    assert loaded.step == step
    return [np.asarray(leaf) for leaf in jax.tree.leaves(nnx.to_pure_dict(nnx.state(loaded.model)))]


def _assert_same_training(run_dir: Path, reference: Path, last_step: int = 4) -> None:
    train, reference_train = _rows(run_dir, "train"), _rows(reference, "train")
    for step in range(1, last_step + 1):
        assert train[step]["loss"] == pytest.approx(reference_train[step]["loss"], rel=LOSS_RTOL), step
    for ours, theirs in zip(_params(run_dir, last_step), _params(reference, last_step), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=PARAM_ATOL)


# ---------------------------------------------------------------------------------------------
# 8 devices in one process.


def test_data_parallel_matches_one_device(eight_device_runs, reference_run):
    run_dir = eight_device_runs["data_parallel"]
    _assert_same_training(run_dir, reference_run)
    validation = _rows(run_dir, "validation")[4]
    assert validation["nll"] == pytest.approx(_rows(reference_run, "validation")[4]["nll"], rel=LOSS_RTOL)
    assert validation["targets"] == _rows(reference_run, "validation")[4]["targets"]


def test_fsdp_matches_one_device(eight_device_runs, reference_run):
    run_dir = eight_device_runs["fsdp"]
    _assert_same_training(run_dir, reference_run)
    assert json.loads((run_dir / "config.json").read_text())["train"]["mesh_fsdp"] == 4


def test_one_device_checkpoint_resumes_on_fsdp_mesh(eight_device_runs, reference_run):
    run_dir = eight_device_runs["fsdp_from_one_device"]
    _assert_same_training(run_dir, reference_run)


def test_fsdp_checkpoint_resumes_on_one_device(eight_device_runs, reference_run, small_text_dataset,
                                               tmp_path):
    run_dir = _cut_at_step(eight_device_runs["fsdp"], tmp_path / "run", 2)
    config = _config(small_text_dataset, "train.mesh_data=1", "train.mesh_fsdp=1")
    summary = train_and_evaluate(config, run_dir, progress=False, devices=jax.devices()[:1])
    assert summary.start_step == 2
    _assert_same_training(run_dir, reference_run)


def test_mesh_must_match_device_count(small_text_dataset, tmp_path):
    config = _config(small_text_dataset, "train.mesh_data=2", "train.mesh_fsdp=4")
    with pytest.raises(ConfigError, match="has 8 devices but 1 are available"):
        train_and_evaluate(config, tmp_path / "run", progress=False, devices=jax.devices()[:1])
    assert not (tmp_path / "run" / "config.json").exists()


# ---------------------------------------------------------------------------------------------
# Two processes on loopback.


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _pact_processes(args: list[str], count: int = 2, devices_each: int = 4) -> list[subprocess.Popen]:
    """Start `pact ARGS` as processes 0 to count - 1 of one run, coordinated on loopback."""
    address = f"127.0.0.1:{_free_port()}"
    processes = []
    for process_id in range(count):
        command = [sys.executable, "-c", "from pact.cli.main import main; main()", *args,
                   "--coordinator-address", address, "--num-processes", str(count),
                   "--process-id", str(process_id), "--heartbeat-timeout", str(HEARTBEAT_SECONDS)]
        processes.append(subprocess.Popen(command, env=_device_env(devices_each), stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    return processes


def _stop_all(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate()


@pytest.fixture(scope="module")
def two_process_run(small_text_dataset, tmp_path_factory):
    """Two processes of 4 devices train with FSDP over all 8; process 1 is killed after step 4.

    Returns the run directory and, for process 0: exit status, stderr and seconds from the
    kill to its exit.
    """
    run_dir = tmp_path_factory.mktemp("two_processes") / "run"
    args = ["train", str(run_dir), "--config", "tiny"]
    extra = ("train.mesh_fsdp=8", "train.steps=100000", "train.keep_checkpoints=100")
    for override in _overrides(small_text_dataset, *extra):
        args += ["--set", override]
    processes = _pact_processes(args)
    try:
        deadline = time.monotonic() + 600
        while not (run_dir / "checkpoints" / "4").is_dir():
            for process in processes:
                assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no checkpoint at step 4 after 600 s"
            time.sleep(0.1)
        processes[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        _, stderr = processes[0].communicate(timeout=HEARTBEAT_SECONDS + 120)
        seconds = time.monotonic() - killed
    finally:
        _stop_all(processes)
    return run_dir, processes[0].returncode, stderr, seconds


def test_two_processes_match_one_process(two_process_run, reference_run):
    run_dir, _, _, _ = two_process_run
    _assert_same_training(run_dir, reference_run)


def test_lost_peer_ends_other_process(two_process_run):
    _, returncode, stderr, seconds = two_process_run
    # Usually the next collective fails at once and pact exits with its message. If Gloo does
    # not notice the closed connection, the coordinator reports the missed heartbeats and JAX
    # aborts the process with its own message.
    if "a collective operation with the other processes failed" in stderr:
        assert returncode == 1, stderr[-3000:]
    else:
        assert "another task died" in stderr, stderr[-3000:]
        assert returncode != 0
    assert seconds < HEARTBEAT_SECONDS + 60


def test_eval_benchmark_two_processes_match_one(reference_run, tmp_path):
    from typer.testing import CliRunner

    from pact.cli.main import app

    # Gloo prints connection lines to stdout, so the metrics go to a file rather than stdout.
    args = ["eval", "benchmark", str(reference_run), "--split", "test", "--batch-size", "8"]
    processes = _pact_processes([*args, "--json", str(tmp_path / "together.json")])
    try:
        outputs = [process.communicate(timeout=600) for process in processes]
    finally:
        _stop_all(processes)
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stdout + stderr
    assert "NLL (nats/byte)" in outputs[0][0]
    assert "NLL (nats/byte)" not in outputs[1][0], "process 1 printed the results too"

    single = CliRunner().invoke(app, [*args, "--json", str(tmp_path / "alone.json")])
    assert single.exit_code == 0, single.output
    together = json.loads((tmp_path / "together.json").read_text())
    alone = json.loads((tmp_path / "alone.json").read_text())
    assert together["targets"] == alone["targets"] > 0
    assert together["nll"] == pytest.approx(alone["nll"], rel=LOSS_RTOL)
    assert together["accuracy"] == pytest.approx(alone["accuracy"], abs=1e-6)
