"""Faults that must not lose work: full disks, file-size limits and damaged checkpoints."""

import contextlib
import json
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pact.cli.main import app

SMALL_MODEL = [
    "model.max_context=96", "model.num_latents=24", "model.num_channels=32", "model.num_heads=2",
    "model.num_layers=1", "data.batch_size=4", "train.eval_every=0", "train.log_every=1",
    "train.checkpoint_every=2", "train.warmup_steps=2",
]


@pytest.fixture(scope="module")
def text_dataset(pg19_mini, tmp_path_factory) -> Path:
    from pact.dataset_writer import encode_dataset

    summary = encode_dataset(pg19_mini, tmp_path_factory.mktemp("data"), name="pg19_mini", tokenizer="bytes",
                             workers=1, show_progress=False)
    return summary.path


class Tmpfs:
    """A size-limited tmpfs mounted for one test: a real file system that fills up."""

    def __init__(self, path: Path):
        self.path = path

    def mount(self, size: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.path)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}); the file-size-limit "
                        "tests cover the same errors without one")

    def resize(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def unmount(self) -> None:
        subprocess.run(["umount", str(self.path)], capture_output=True)


@pytest.fixture
def tmpfs(tmp_path):
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    filesystem = Tmpfs(tmp_path / "tmpfs")
    yield filesystem
    filesystem.unmount()


def _pact(args: list[str], file_size_limit: int | None = None) -> subprocess.CompletedProcess:
    def limit():
        # Ignore SIGXFSZ so that a write past the limit fails with EFBIG instead of killing.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run(
        [sys.executable, "-c", "from pact.cli.main import main; main()", *args],
        capture_output=True, text=True, preexec_fn=limit if file_size_limit else None, timeout=600,
    )


def _train_args(run_dir: Path, dataset: Path, steps: int) -> list[str]:
    args = ["train", str(run_dir), "--config", "tiny", "--data", str(dataset), "--steps", str(steps)]
    for override in SMALL_MODEL:
        args += ["--set", override]
    return args


def _final_params(run_dir: Path):
    import jax
    from flax import nnx

    from pact.run import load_model

    loaded = load_model(run_dir)
    return loaded.step, jax.tree.leaves(nnx.to_pure_dict(nnx.state(loaded.model)))


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


# Checkpoints.


def test_full_disk_during_checkpoint_then_resume(text_dataset, tmpfs, tmp_path):
    # 900 KiB hold a checkpoint of this model (about 0.4 MB) and the metrics, but not every one.
    tmpfs.mount("900k")
    run_dir = tmpfs.path / "run"
    error = _one_line_error(_pact(_train_args(run_dir, text_dataset, 12)))
    saved = sorted(int(path.name) for path in (run_dir / "checkpoints").iterdir() if path.name.isdigit())
    assert saved and saved[-1] < 12
    assert f"could not write the checkpoint of step {saved[-1] + 2}" in error
    assert f"Checkpoints intact: steps {', '.join(map(str, saved))}" in error
    assert not list((run_dir / "checkpoints").glob("*tmp*")), "a partial checkpoint was left behind"

    # With room again, the same command resumes and ends where an uninterrupted run does.
    tmpfs.resize("30m")
    resumed = _pact(_train_args(run_dir, text_dataset, 12))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from the checkpoint at step {saved[-1]}" in resumed.stderr
    reference = tmp_path / "reference"
    assert _pact(_train_args(reference, text_dataset, 12)).returncode == 0
    step, params = _final_params(run_dir)
    reference_step, reference_params = _final_params(reference)
    assert step == reference_step == 12
    for a, b in zip(params, reference_params):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_file_size_limit_during_checkpoint(text_dataset, tmp_path):
    # A 100 kB file-size limit passes config.json and the metrics but not the optimizer state.
    run_dir = tmp_path / "run"
    error = _one_line_error(_pact(_train_args(run_dir, text_dataset, 4), file_size_limit=100_000))
    assert "could not write the checkpoint of step 2" in error
    assert "file-size limit (ulimit -f) is 100,000 bytes" in error
    assert json.loads((run_dir / "config.json").read_text())["model"]["num_channels"] == 32
    assert (run_dir / "metrics.jsonl").read_text().count('"split": "train"') == 2


def test_damaged_checkpoint_falls_back(text_dataset, tmp_path):
    run_dir = tmp_path / "run"
    assert _pact(_train_args(run_dir, text_dataset, 4)).returncode == 0
    # Cut the largest parameter file of the newest checkpoint, as a crash of the disk would.
    files = sorted((run_dir / "checkpoints" / "4" / "params").rglob("*"), key=lambda p: p.stat().st_size)
    with open(files[-1], "r+b") as file:
        file.truncate(100)

    from pact.run import load_model

    assert load_model(run_dir).step == 2
    resumed = _pact(_train_args(run_dir, text_dataset, 6))
    assert resumed.returncode == 0, resumed.stderr
    assert "damaged or incomplete" in resumed.stderr
    assert "resuming from the checkpoint at step 2" in resumed.stderr


def test_checkpoint_of_other_model_named(text_dataset, tmp_path):
    run_dir = tmp_path / "run"
    assert _pact(_train_args(run_dir, text_dataset, 2)).returncode == 0
    config = json.loads((run_dir / "config.json").read_text())
    config["model"]["num_channels"] = 64
    (run_dir / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(app, ["sample", str(run_dir), "--events", "4", "--out", str(tmp_path / "s")])
    assert result.exit_code == 1
    message = str(result.exception)
    assert "holds another model than the config describes" in message
    assert "(32, 32) saved, (64, 64) expected" in message


# Datasets and samples.


def test_full_disk_while_encoding_then_resume(pg19_mini, tmpfs):
    tmpfs.mount("300k")
    data_dir = tmpfs.path / "data"
    args = ["encode", "dataset", str(pg19_mini), "--data-dir", str(data_dir), "--tokenizer", "bytes",
            "--workers", "1"]
    error = _one_line_error(_pact(args))
    assert "No space left on device" in error
    assert "run the same command again to resume" in error
    assert not (data_dir / "pg19_mini").exists()

    # Room for the encoded files but not for the dataset written from them.
    tmpfs.resize("17m")
    error = _one_line_error(_pact(args))
    assert "could not write dataset pg19_mini" in error
    assert not (data_dir / "pg19_mini").exists()

    tmpfs.resize("60m")
    finished = _pact(args)
    assert finished.returncode == 0, finished.stderr
    assert "0 files read, 5 taken from an interrupted run" in finished.stdout

    from pact.datasets import open_dataset

    dataset = open_dataset(data_dir / "pg19_mini")
    sources = sorted(dataset.source(split)[i]["source"] for split in dataset.splits
                     for i in range(len(dataset.source(split))))
    assert len(sources) == len(set(sources)) == 5


def test_full_disk_while_writing_samples(text_dataset, tmpfs, tmp_path):
    run_dir = tmp_path / "run"
    assert _pact(_train_args(run_dir, text_dataset, 2)).returncode == 0
    tmpfs.mount("64k")
    with contextlib.suppress(OSError):
        (tmpfs.path / "filler").write_bytes(b"\0" * 60_000)
    out = tmpfs.path / "samples"
    error = _one_line_error(_pact(["sample", str(run_dir), "--out", str(out), "--events", "3000",
                                   "--num-samples", "4"]))
    assert "No space left on device" in error
    leftovers = [path.name for path in out.iterdir()] if out.exists() else []
    assert not [name for name in leftovers if ".tmp" in name], leftovers
