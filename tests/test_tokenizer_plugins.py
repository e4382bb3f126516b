"""Third-party tokenizers installed as distributions with a `pact.tokenizers` entry point."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from pact.cli.main import app
from pact.datasets import open_dataset
from pact.encodings import available_tokenizers, get_tokenizer, tokenizer_from_spec
from pact.errors import TokenizerError

runner = CliRunner()

# A complete tokenizer plug-in: lower-case letters and spaces of a text, everything else dropped.
LETTERS_MODULE = '''
import os
from pathlib import Path

import numpy as np

from pact.encodings import Tokenizer

ALPHABET = " abcdefghijklmnopqrstuvwxyz"


class LettersTokenizer(Tokenizer):
    name = "letters"
    version = "1"
    file_suffixes = (".txt",)
    modality = "text"

    def read(self, path):
        return Path(path).read_bytes().decode("utf-8", errors="replace")

    def encode(self, item):
        letters = [ALPHABET.index(c) for c in item.lower() if c in ALPHABET]
        return np.asarray(letters, dtype=np.int32) + 2

    def decode(self, ids):
        ids = np.asarray(ids).reshape(-1)
        ends = np.flatnonzero(ids == self.eos_id)
        ids = ids[: ends[0]] if ends.size else ids
        return "".join(ALPHABET[i - 2] for i in ids if 2 <= i < self.vocab_size)

    def write(self, item, path):
        Path(path).write_text(item)

    @property
    def vocab_size(self):
        return 2 + len(ALPHABET)

    def options(self):
        return {}
'''


def _install(folder, entry_points: str) -> None:
    """Make `folder` a distribution directory as pip leaves it: a module and its .dist-info."""
    (folder / "pact_letters.py").write_text(LETTERS_MODULE)
    info = folder / "pact_letters-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pact-letters\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def letters_installed(tmp_path, monkeypatch):
    folder = tmp_path / "site"
    folder.mkdir()
    _install(folder, "[pact.tokenizers]\nletters = pact_letters:LettersTokenizer\n")
    monkeypatch.syspath_prepend(str(folder))
    return folder


def test_entry_point_adds_tokenizer(letters_installed):
    assert "letters" in available_tokenizers()
    tokenizer = get_tokenizer("letters")
    assert type(tokenizer).__module__ == "pact_letters"
    assert tokenizer.decode(tokenizer.encode("Hi, you!")) == "hi you"
    assert tokenizer_from_spec(tokenizer.spec()).spec() == {
        "name": "letters", "version": "1", "vocab_size": 29, "options": {},
    }


def test_entry_point_tokenizer_encodes_dataset(letters_installed, pg19_mini, tmp_path):
    result = runner.invoke(app, ["encode", "dataset", str(pg19_mini), "--data-dir", str(tmp_path / "data"),
                                 "--tokenizer", "letters", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "Tokenizer: letters version 1, vocabulary 29" in result.stdout

    dataset = open_dataset(tmp_path / "data" / "pg19_mini")
    example = dataset.source("test")[0]
    tokens = example["tokens"]
    assert tokens.max() < 29
    book = (pg19_mini / example["source"]).read_bytes().decode("utf-8", errors="replace")
    assert dataset.tokenizer().decode(tokens) == "".join(c for c in book.lower() if c in " abcdefghijklmnopqrstuvwxyz")
    assert np.count_nonzero(tokens == 1) == 1


def test_entry_point_to_other_class_is_rejected(tmp_path, monkeypatch):
    folder = tmp_path / "site"
    folder.mkdir()
    _install(folder, "[pact.tokenizers]\nbroken = pact_letters:ALPHABET\n")
    monkeypatch.syspath_prepend(str(folder))
    with pytest.raises(TokenizerError, match="entry point 'pact_letters:ALPHABET' for tokenizer 'broken' is not a subclass"):
        get_tokenizer("broken")


def test_uninstalled_tokenizer_is_unknown():
    with pytest.raises(TokenizerError, match="unknown tokenizer 'letters'; available: bytes, copy, image"):
        get_tokenizer("letters")
