"""`pact encode dataset` through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from pact.cli.main import app
from pact.errors import ConfigError

runner = CliRunner()


def _encode(*args: str):
    return runner.invoke(app, ["encode", "dataset", *args])


def test_encode_pg19_prints_summary(pg19_mini, tmp_path):
    result = _encode(str(pg19_mini), "--data-dir", str(tmp_path), "--tokenizer", "bytes", "--workers", "2")
    assert result.exit_code == 0, result.output

    path = tmp_path.resolve() / "pg19_mini" / "1.0.0"
    assert "Encoded dataset pg19_mini: 5 files read." in result.stdout
    assert f"Path: {path}" in result.stdout
    assert "Tokenizer: bytes version 1, vocabulary 258" in result.stdout
    assert "train              3       3,162,148" in result.stdout
    assert "validation         1         415,863" in result.stdout
    assert "test               1         448,965" in result.stdout
    assert "Skipped no files." in result.stdout
    assert f"Train on it: pact train runs/pg19_mini --data {path}" in result.stdout

    again = _encode(str(pg19_mini), "--data-dir", str(tmp_path), "--tokenizer", "bytes")
    assert again.exit_code == 0, again.output
    assert "already exists with the same tokenizer and input; reusing it" in again.stdout


def test_encode_lists_skipped_files(pg19_mini, maestro_root, tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "book.txt").symlink_to(pg19_mini / "test" / "84.txt")
    (folder / "song [live].txt").symlink_to(sorted(maestro_root.glob("*/*.midi"))[0])

    result = _encode(str(folder), "--data-dir", str(tmp_path / "data"), "--tokenizer", "bytes", "--name", "mixed")
    assert result.exit_code == 0, result.output
    assert "Skipped 1 file:" in result.stdout
    assert "song [live].txt (" in result.stdout
    assert "contains a NUL byte at offset 4" in result.stdout

    metadata = json.loads((tmp_path / "data" / "mixed" / "1.0.0" / "metadata.json").read_text())
    assert [item["source"] for item in metadata["skipped"]] == ["song [live].txt"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--workers", "0"], "invalid number of workers 0: expected 1 to 256 worker processes"),
        (["--workers", "300"], "invalid number of workers 300: expected 1 to 256 worker processes"),
        (["--name", "My Books"], "invalid dataset name 'My Books'"),
        (["--name", "pg19"], "'pg19' belongs to a dataset in the TFDS catalog"),
        (["--tokenizer", "words"], "unknown tokenizer 'words' for --tokenizer; available: bytes"),
    ],
)
def test_invalid_option_is_rejected_before_work(pg19_mini, tmp_path, options, message):
    result = _encode(str(pg19_mini), "--data-dir", str(tmp_path / "data"), "--tokenizer", "bytes", *options)
    assert isinstance(result.exception, ConfigError)
    assert message in str(result.exception)
    assert not (tmp_path / "data").exists()


def test_input_that_is_not_a_folder_is_rejected(pg19_mini, tmp_path):
    result = _encode(str(pg19_mini / "metadata.csv"), "--data-dir", str(tmp_path), "--tokenizer", "bytes")
    assert isinstance(result.exception, ConfigError)
    assert "metadata.csv is not a folder" in str(result.exception)


def test_error_is_one_line_on_stderr(pg19_mini, tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "pact.cli.main", "encode", "dataset", str(pg19_mini), "--data-dir", str(tmp_path),
         "--tokenizer", "bytes", "--workers", "-2"],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 1
    assert completed.stdout == ""
    lines = completed.stderr.strip().splitlines()
    assert lines[0] == "Error: invalid number of workers -2: expected 1 to 256 worker processes"
    assert "Traceback" not in completed.stderr


def test_strict_error_keeps_brackets_in_file_name(pg19_mini, maestro_root, tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "song [bold].txt").symlink_to(sorted(maestro_root.glob("*/*.midi"))[0])
    completed = subprocess.run(
        [sys.executable, "-m", "pact.cli.main", "encode", "dataset", str(folder), "--data-dir", str(tmp_path / "data"),
         "--tokenizer", "bytes", "--strict", "--workers", "1"],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 1
    assert f"Error: cannot encode {folder / 'song [bold].txt'}: contains a NUL byte" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_cli_import_stays_light():
    program = (
        "import sys\n"
        "import pact.cli.main\n"
        "heavy = [m for m in ('tensorflow_datasets', 'jax', 'grain', 'numpy', 'symusic', 'note_seq') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    completed = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == ""
