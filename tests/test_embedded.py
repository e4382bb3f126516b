"""The model bundled with pact: its files, `pact quickstart`, and sampling and scoring without a run."""

import json
import math
import shutil
from pathlib import Path

import pretty_midi
import pytest
from typer.testing import CliRunner

from pact.cli.main import app
from pact.dataset_writer import encode_dataset
from pact.errors import PactError
from pact.export import PARAMS_FILE, embedded_model_dir, read_export_info
from pact.quickstart import bundled_prime

runner = CliRunner()


def test_bundled_model_files_and_size():
    folder = embedded_model_dir()
    assert (folder / PARAMS_FILE).stat().st_size <= 25e6
    config = json.loads((folder / "config.json").read_text())
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    assert tokenizer["name"] == "performance"
    assert config["model"]["vocab_size"] == tokenizer["vocab_size"]
    assert read_export_info(folder)["step"] > 0


def test_quickstart_continues_bundled_prime(tmp_path):
    result = runner.invoke(app, ["quickstart", "--out", str(tmp_path), "--seconds", "4", "--prime-seconds", "3"])
    assert result.exit_code == 0, result.output
    assert "Continued the first 3 s of bach_prelude_bwv_873.mid" in result.output

    midi = pretty_midi.PrettyMIDI(str(tmp_path / "sample_0.mid"))
    onsets = [note.start for note in midi.instruments[0].notes]
    assert min(onsets) < 3.0
    assert max(onsets) >= 3.0  # the continuation plays notes after the prime
    assert (tmp_path / "sample_0.png").stat().st_size > 0
    if shutil.which("fluidsynth") is not None:
        assert (tmp_path / "sample_0.wav").stat().st_size > 0
    else:
        assert "No audio" in result.output


def test_sample_without_run_dir_uses_bundled_model(tmp_path):
    step = read_export_info(embedded_model_dir())["step"]
    result = runner.invoke(app, ["sample", "--events", "24", "--out", str(tmp_path), "--no-piano-roll"])
    assert result.exit_code == 0, result.output
    assert f"from step {step}" in result.output
    assert (tmp_path / "sample_0.mid").is_file()


def test_info_without_run_dir_describes_bundled_model():
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    description = json.loads(result.output)
    assert description["run_dir"] == str(embedded_model_dir())
    assert description["parameters"] > 1_000_000


def test_eval_bundled_model_needs_data():
    result = runner.invoke(app, ["eval", "benchmark"])
    assert result.exit_code == 1
    assert isinstance(result.exception, PactError)
    assert "the bundled model needs --data" in str(result.exception)


def test_eval_bundled_model_on_held_out_piece(tmp_path):
    (tmp_path / "input" / "test").mkdir(parents=True)
    shutil.copyfile(bundled_prime(), tmp_path / "input" / "test" / bundled_prime().name)
    summary = encode_dataset(tmp_path / "input", tmp_path / "data", name="held_out", workers=1,
                             show_progress=False)
    result = runner.invoke(app, ["eval", "benchmark", "--data", str(summary.path), "--split", "test",
                                 "--json", "-"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    # A uniform guess over the 390 ids scores ln 390 = 5.97 nats, and the event frequencies
    # of the training split alone 4.88; a trained model must beat both.
    assert math.isfinite(metrics["nll"])
    assert metrics["nll"] < 4.5
