"""`pact eval benchmark` on tiny runs trained a few steps on text, images and the copy task."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from pact.cli.main import app
from pact.errors import ConfigError, TokenizerMismatchError

runner = CliRunner()

# A model that compiles and trains in seconds on a CPU.
TINY = [
    "model.max_context=128", "model.num_latents=32", "model.num_channels=32", "model.num_heads=2",
    "model.num_layers=1", "data.batch_size=4", "train.eval_every=0", "train.log_every=1",
    "train.warmup_steps=1", "train.checkpoint_every=2",
]


def _invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, f"pact {' '.join(args)} failed:\n{result.output}\n{result.exception!r}"
    return result


def _encode_and_train(input_path: str, work: Path, *encode_args: str) -> tuple[Path, Path]:
    """Encode `input_path` and train a tiny model on it for 2 steps; return (dataset, run)."""
    _invoke("encode", "dataset", input_path, "--data-dir", str(work / "data"), "--name", "data", "--workers", "1",
            *encode_args)
    dataset = work / "data" / "data" / "1.0.0"
    run = work / "run"
    args = ["train", str(run), "--config", "tiny", "--data", str(dataset), "--steps", "2"]
    for override in TINY:
        args += ["--set", override]
    _invoke(*args)
    return dataset, run


@pytest.fixture(scope="module")
def copy_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("copy")
    return _encode_and_train("synthetic:copy", work, "--copy-length", "24", "--copy-examples", "16,4,4",
                             "--vocab-size", "10")


@pytest.fixture(scope="module")
def text_run(pg19_mini, tmp_path_factory):
    """SentencePiece on the PG-19 training books; the validation split is the first 6 kB of a real book."""
    work = tmp_path_factory.mktemp("text")
    books = work / "books"
    (books / "train").mkdir(parents=True)
    (books / "validation").mkdir()
    for book in sorted((pg19_mini / "train").glob("*.txt")):
        (books / "train" / book.name).symlink_to(book)
    text = (pg19_mini / "validation" / "2641.txt").read_bytes()[:6000].decode("cp1252")
    (books / "validation" / "2641_start.txt").write_text(text, encoding="utf-8")
    return _encode_and_train(str(books), work, "--tokenizer", "sentencepiece", "--vocab-size", "600")


@pytest.fixture(scope="module")
def image_run(shared_data, tmp_path_factory):
    work = tmp_path_factory.mktemp("image")
    images = work / "images"
    for split, count in (("train", 4), ("validation", 2)):
        (images / split).mkdir(parents=True)
        for path in sorted((shared_data / "images64" / split).glob("*.png"))[:count]:
            (images / split / path.name).symlink_to(path)
    return _encode_and_train(str(images), work, "--tokenizer", "image")


def _benchmark(run: Path, tmp_path: Path, *extra: str) -> tuple[dict, str]:
    json_path = tmp_path / "metrics.json"
    result = _invoke("eval", "benchmark", str(run), "--split", "validation", "--batch-size", "64",
                     "--json", str(json_path), *extra)
    return json.loads(json_path.read_text()), result.stdout


def test_copy_task_reports_mirrored_accuracy(copy_run, tmp_path):
    _, run = copy_run
    metrics, stdout = _benchmark(run, tmp_path, "--plot", str(tmp_path / "loss.png"))
    assert metrics["documents"] == 4
    assert metrics["targets"] == 4 * (2 * 24 + 2)
    assert metrics["token_unit"] == "symbol"
    assert metrics["copy_tokens"] == 4 * 24
    assert metrics["copy_sequences"] == 4
    assert 0.0 <= metrics["copy_sequence_accuracy"] <= metrics["copy_token_accuracy"] <= 1.0
    assert metrics["copy_nll"] > 0.0
    assert "mirrored half: token accuracy" in stdout
    assert "NLL (nats/symbol)" in stdout

    with Image.open(tmp_path / "loss.png") as image:
        assert image.format == "PNG"
        assert image.size[0] > 400
    assert f"Wrote the loss by position to {tmp_path / 'loss.png'}" in stdout


def test_text_reports_bits_per_byte(text_run, tmp_path):
    _, run = text_run
    metrics, stdout = _benchmark(run, tmp_path)
    book = run.parent / "books" / "validation" / "2641_start.txt"
    assert metrics["bytes"] == len(book.read_bytes())
    total_bits = metrics["nll"] * metrics["targets"] / math.log(2)
    assert metrics["bits_per_byte"] == pytest.approx(total_bits / metrics["bytes"], rel=1e-6)
    assert metrics["bytes_per_token"] > 1.5
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["nll"]), rel=1e-6)
    assert "bits/byte" in stdout


def test_image_run_gets_axis_embeddings(image_run, copy_run):
    # A new run on an image dataset turns them on from the tokenizer's grid; others stay off.
    image_model = json.loads((image_run[1] / "config.json").read_text())["model"]
    assert image_model["axis_embeddings"] is True
    assert image_model["position_axes"] == [64, 64, 3]
    copy_model = json.loads((copy_run[1] / "config.json").read_text())["model"]
    assert copy_model["axis_embeddings"] is False
    assert copy_model["position_axes"] is None


def test_axis_embeddings_without_grid_rejected(copy_run, tmp_path):
    dataset, _ = copy_run
    result = runner.invoke(app, ["train", str(tmp_path / "run"), "--config", "tiny", "--data", str(dataset),
                                 "--set", "model.axis_embeddings=true"])
    assert isinstance(result.exception, ConfigError)
    assert "tokenizer 'copy'" in str(result.exception)
    assert "has no position_axes" in str(result.exception)
    assert not (tmp_path / "run" / "config.json").exists()


def test_image_reports_bits_per_dimension(image_run, tmp_path):
    _, run = image_run
    metrics, stdout = _benchmark(run, tmp_path)
    assert metrics["documents"] == 2
    assert metrics["dimensions"] == 2 * 12288
    assert metrics["token_unit"] == "sub-pixel"
    # Only the two EOS targets separate bits per dimension from bits per target.
    assert metrics["bits_per_dim"] == pytest.approx(metrics["bits"], rel=1e-2)
    assert 0.0 < metrics["bits_per_dim"] < 9.0
    assert [bucket["start"] for bucket in metrics["buckets"]] == [0, 512, 1024, 2048, 4096, 8192]
    assert "bits/dim (per sub-pixel)" in stdout


def test_json_to_stdout_prints_only_json(copy_run):
    _, run = copy_run
    result = _invoke("eval", "benchmark", str(run), "--split", "test", "--batch-size", "64", "--json", "-")
    metrics = json.loads(result.stdout)
    assert metrics["split"] == "test"
    assert metrics["copy_sequences"] == 4


def test_dataset_of_other_tokenizer_is_rejected(copy_run, image_run):
    _, run = copy_run
    image_dataset, _ = image_run
    result = runner.invoke(app, ["eval", "benchmark", str(run), "--data", str(image_dataset)])
    assert isinstance(result.exception, TokenizerMismatchError)
    message = str(result.exception)
    assert f"name: 'image' in dataset {image_dataset}, 'copy' here" in message


def test_invalid_plot_path_is_rejected_first(copy_run, tmp_path):
    _, run = copy_run
    result = runner.invoke(app, ["eval", "benchmark", str(run), "--plot", str(tmp_path / "loss.svg")])
    assert isinstance(result.exception, ConfigError)
    assert "must be a .png file" in str(result.exception)
    result = runner.invoke(app, ["eval", "benchmark", str(run), "--plot", str(tmp_path / "absent" / "loss.png")])
    assert isinstance(result.exception, ConfigError)
    assert "does not exist; create it first" in str(result.exception)
