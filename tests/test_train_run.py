"""`pact train` on a real encoded dataset: resuming, interruption and config checks."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pact.config import apply_overrides, get_preset
from pact.errors import ConfigError, TokenizerMismatchError
from pact.train import train_and_evaluate

# A small model with dropout and cross-attend dropout on, so that resuming must also restore
# the random state to match.
OVERRIDES = [
    "model.max_context=96", "model.num_latents=24", "model.num_channels=32", "model.num_heads=2",
    "model.num_layers=1", "model.dropout=0.1", "model.cross_attend_dropout=0.5",
    "data.batch_size=4", "train.steps=8", "train.checkpoint_every=2", "train.eval_every=4",
    "train.eval_batches=1", "train.log_every=1", "train.warmup_steps=2",
]


@pytest.fixture(scope="module")
def text_dataset(pg19_mini, tmp_path_factory) -> Path:
    from pact.dataset_writer import encode_dataset

    data_dir = tmp_path_factory.mktemp("data")
    summary = encode_dataset(pg19_mini, data_dir, name="pg19_mini", tokenizer="bytes", workers=1,
                             show_progress=False)
    return summary.path


def _config(dataset: Path, *extra: str):
    return apply_overrides(get_preset("tiny"), [*OVERRIDES, f"data.dataset={dataset}", *extra])


def _train_rows(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows if row["split"] == "train"}


def _params(run_dir: Path):
    import jax
    from flax import nnx

    from pact.run import load_model

    loaded = load_model(run_dir)
    return loaded.step, jax.tree.leaves(nnx.to_pure_dict(nnx.state(loaded.model)))


def _pact(*args: str) -> list[str]:
    return [sys.executable, "-c", "from pact.cli.main import main; main()", *args]


def _cli_args(run_dir: Path, dataset: Path) -> list[str]:
    args = ["train", str(run_dir), "--config", "tiny", "--data", str(dataset)]
    for override in OVERRIDES:
        args += ["--set", override]
    return args


def _wait_for_checkpoint(run_dir: Path, process: subprocess.Popen, step: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not (run_dir / "checkpoints" / str(step)).is_dir():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"no checkpoint at step {step} after {timeout} s"
        time.sleep(0.05)


def test_resume_after_sigkill_matches_uninterrupted(text_dataset, tmp_path):
    reference = tmp_path / "reference"
    train_and_evaluate(_config(text_dataset), reference, progress=False)

    # Kill the run without warning once a checkpoint exists, then run the same command again.
    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(_pact(*_cli_args(interrupted, text_dataset)),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for_checkpoint(interrupted, process, 4)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = subprocess.run(_pact("train", str(interrupted)), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming from the checkpoint at step" in resumed.stderr

    assert _train_rows(interrupted) == _train_rows(reference)
    reference_step, reference_params = _params(reference)
    resumed_step, resumed_params = _params(interrupted)
    assert reference_step == resumed_step == 8
    for a, b in zip(reference_params, resumed_params):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_ctrl_c_saves_and_exits(text_dataset, tmp_path):
    run_dir = tmp_path / "run"
    args = _cli_args(run_dir, text_dataset) + ["--set", "train.steps=100000", "--set", "train.checkpoint_every=1000"]
    process = subprocess.Popen(_pact(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Wait until training is under way (the first logged step), then press Ctrl-C.
    deadline = time.monotonic() + 240
    while not (run_dir / "metrics.jsonl").is_file() or not (run_dir / "metrics.jsonl").read_text():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stdout + stderr
    assert "stopped by SIGINT" in stderr
    steps = [int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()]
    assert steps and max(steps) >= 1
    assert max(_train_rows(run_dir)) <= max(steps) + 1


def test_resume_rejects_other_model(text_dataset, tmp_path):
    run_dir = tmp_path / "run"
    train_and_evaluate(_config(text_dataset, "train.steps=2"), run_dir, progress=False)
    with pytest.raises(ConfigError, match="model.num_layers: 1 saved, 2 requested"):
        train_and_evaluate(_config(text_dataset, "model.num_layers=2"), run_dir, progress=False)


def test_resume_with_more_steps_saves_them(text_dataset, tmp_path):
    from pact.run import RunDir

    run_dir = tmp_path / "run"
    train_and_evaluate(_config(text_dataset, "train.steps=2"), run_dir, progress=False)
    train_and_evaluate(_config(text_dataset, "train.steps=3"), run_dir, progress=False)
    assert RunDir(run_dir).read_config().train.steps == 3
    assert max(_train_rows(run_dir)) == 3


def test_resume_rejects_other_tokenizer(text_dataset, tmp_path):
    run_dir = tmp_path / "run"
    train_and_evaluate(_config(text_dataset, "train.steps=2"), run_dir, progress=False)
    spec_path = run_dir / "tokenizer.json"
    spec = json.loads(spec_path.read_text())
    spec["version"] = "0"
    spec_path.write_text(json.dumps(spec))
    with pytest.raises(TokenizerMismatchError, match="version"):
        train_and_evaluate(_config(text_dataset, "train.steps=3"), run_dir, progress=False)


def test_missing_dataset_is_clear(tmp_path):
    from pact.errors import DatasetError

    config = apply_overrides(get_preset("tiny"), [f"data.dataset={tmp_path / 'nowhere'}"])
    with pytest.raises(DatasetError, match="nowhere"):
        train_and_evaluate(config, tmp_path / "run", progress=False)


def test_init_from_starts_from_the_source_parameters(text_dataset, tmp_path):
    from typer.testing import CliRunner

    from pact.cli.main import app
    from pact.run import RunDir

    source = tmp_path / "source"
    train_and_evaluate(_config(text_dataset, "train.steps=2"), source, progress=False)

    # Without --config the new run takes the source's config. One step at a learning rate of
    # 1e-9 moves no parameter visibly, so the new run must contain the source's parameters.
    tuned = tmp_path / "tuned"
    result = CliRunner().invoke(app, [
        "train", str(tuned), "--init-from", str(source), "--data", str(text_dataset), "--steps", "1",
        "--set", "train.learning_rate=1e-9", "--set", "train.warmup_steps=0",
    ])
    assert result.exit_code == 0, result.output
    config = RunDir(tuned).read_config()
    assert config.train.init_from == str(source)
    assert config.model == RunDir(source).read_config().model
    assert sorted(_train_rows(tuned)) == [1]

    (_, source_leaves), (step, tuned_leaves) = _params(source), _params(tuned)
    assert step == 1
    for source_leaf, tuned_leaf in zip(source_leaves, tuned_leaves, strict=True):
        np.testing.assert_allclose(np.asarray(tuned_leaf), np.asarray(source_leaf), atol=1e-6)

    # A run from random weights with the same seed is far from the source.
    fresh = tmp_path / "fresh"
    train_and_evaluate(_config(text_dataset, "train.steps=1", "train.learning_rate=1e-9",
                               "train.warmup_steps=0"), fresh, progress=False)
    _, fresh_leaves = _params(fresh)
    assert any(not np.allclose(np.asarray(a), np.asarray(b), atol=1e-6)
               for a, b in zip(fresh_leaves, source_leaves, strict=True))


def test_init_from_rejects_other_model_and_tokenizer(text_dataset, tmp_path):
    source = tmp_path / "source"
    train_and_evaluate(_config(text_dataset, "train.steps=1"), source, progress=False)
    with pytest.raises(ConfigError, match=r"train.init_from=.*is a different model .*blocks.1"):
        train_and_evaluate(_config(text_dataset, f"train.init_from={source}", "model.num_layers=2"),
                           tmp_path / "deeper", progress=False)

    spec_path = source / "tokenizer.json"
    spec = json.loads(spec_path.read_text())
    spec["version"] = "0"
    spec_path.write_text(json.dumps(spec))
    with pytest.raises(TokenizerMismatchError, match="train.init_from"):
        train_and_evaluate(_config(text_dataset, f"train.init_from={source}"), tmp_path / "other", progress=False)
