"""The main job on real MAESTRO performances: encode, train, sample (with and without a prime), evaluate."""

import json
import math
from pathlib import Path

import pretty_midi
import pytest
from typer.testing import CliRunner

from pact.cli.main import app

runner = CliRunner()

TRAIN_OVERRIDES = [
    "model.max_context=256", "model.num_latents=64", "model.num_channels=64", "model.num_heads=2",
    "model.num_layers=2", "data.batch_size=8", "train.eval_every=20", "train.eval_batches=2",
    "train.checkpoint_every=20", "train.log_every=5", "train.learning_rate=3e-3",
]


def _invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, f"pact {' '.join(args)} failed:\n{result.output}\n{result.exception!r}"
    return result


@pytest.fixture(scope="module")
def maestro_dataset(maestro_root, tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("data")
    _invoke("encode", "dataset", str(maestro_root), "--data-dir", str(data_dir), "--name", "maestro_asap",
            "--workers", "2")
    return data_dir / "maestro_asap" / "1.0.0"


@pytest.fixture(scope="module")
def trained_run(maestro_dataset, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    args = ["train", str(run_dir), "--config", "tiny", "--data", str(maestro_dataset), "--steps", "40"]
    for override in TRAIN_OVERRIDES:
        args += ["--set", override]
    result = _invoke(*args)
    assert "validation NLL" in result.stdout
    assert "nats/event" in result.stdout, "the summary names the performance unit"
    return run_dir


def _notes(path: Path) -> list:
    midi = pretty_midi.PrettyMIDI(str(path))
    return [note for instrument in midi.instruments for note in instrument.notes]


def test_dataset_has_maestro_splits(maestro_dataset):
    metadata = json.loads((maestro_dataset / "metadata.json").read_text())
    assert metadata["tokenizer"]["name"] == "performance"
    assert metadata["tokenizer"]["vocab_size"] == 390
    files = {split: values["files"] for split, values in metadata["splits"].items()}
    assert files == {"train": 295, "validation": 25, "test": 33}


def test_training_lowers_loss(trained_run):
    rows = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    train = [row["loss"] for row in rows if row["split"] == "train"]
    validation = [row["nll"] for row in rows if row["split"] == "validation"]
    assert train[-1] < train[0] - 0.5, train
    assert validation[-1] < math.log(390)
    assert (trained_run / "config.json").is_file()
    assert json.loads((trained_run / "tokenizer.json").read_text())["name"] == "performance"


def test_sample_unconditional(trained_run, tmp_path):
    result = _invoke("sample", str(trained_run), "--out", str(tmp_path), "--num-samples", "2", "--seconds", "8")
    for index in range(2):
        path = tmp_path / f"sample_{index}.mid"
        notes = _notes(path)
        assert notes, f"{path} has no notes"
        assert max(note.end for note in notes) <= 8.0 + 1e-6
    assert "sample_1.mid" in result.stdout


def test_sample_continues_prime(trained_run, maestro_root, tmp_path):
    prime = next(iter(sorted(maestro_root.glob("2004/*.midi"))))
    _invoke("sample", str(trained_run), "--out", str(tmp_path), "--prime", str(prime),
            "--prime-seconds", "5", "--seconds", "6", "--seed", "3")
    notes = _notes(tmp_path / "sample_0.mid")
    prime_notes = [note for note in notes if note.start < 5.0]
    new_notes = [note for note in notes if note.start >= 5.0]
    assert prime_notes and new_notes
    assert max(note.end for note in notes) <= 11.0 + 1e-6

    # Same seed, same output.
    again = tmp_path / "again"
    _invoke("sample", str(trained_run), "--out", str(again), "--prime", str(prime),
            "--prime-seconds", "5", "--seconds", "6", "--seed", "3")
    assert (again / "sample_0.mid").read_bytes() == (tmp_path / "sample_0.mid").read_bytes()


def test_eval_benchmark_finite_nll(trained_run, tmp_path):
    json_path = tmp_path / "metrics.json"
    result = _invoke("eval", "benchmark", str(trained_run), "--split", "validation", "--batch-size", "64",
                     "--json", str(json_path))
    metrics = json.loads(json_path.read_text())
    assert metrics["documents"] == 25
    assert math.isfinite(metrics["nll"])
    assert metrics["nll"] < math.log(390)
    assert metrics["bits"] == pytest.approx(metrics["nll"] / math.log(2))
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["nll"]), rel=1e-6)
    assert 0.0 < metrics["accuracy"] < 1.0
    assert sum(bucket["targets"] for bucket in metrics["buckets"]) == metrics["targets"]
    assert "NLL (nats/event)" in result.stdout


def test_info_describes_run(trained_run):
    result = _invoke("info", str(trained_run), "--json")
    description = json.loads(result.stdout)
    assert description["checkpoint_steps"][-1] == 40
    assert description["tokenizer"]["name"] == "performance"
    assert description["latest_train"]["step"] == 40
    assert description["latest_validation"]["step"] == 40
    assert description["parameters"] > 10_000
    assert description["token_unit"] == "event"
    table = _invoke("info", str(trained_run)).stdout
    assert "latest validation" in table
    assert "nats/event" in table


def test_info_rejects_other_folder(tmp_path):
    result = runner.invoke(app, ["info", str(tmp_path)])
    assert result.exit_code == 1
    assert "is not a pact run directory" in str(result.exception)


def test_version_flag():
    from pact import __version__

    result = _invoke("--version")
    assert result.stdout.strip() == f"pact {__version__}"
