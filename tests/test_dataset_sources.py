"""`pact encode dataset` on inputs beyond MIDI folders: PG-19 with SentencePiece, image folders,
prepared TFDS datasets (tfds:NAME) and the synthetic copy task."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pact.cli.main import app
from pact.dataset_sources import list_inputs
from pact.datasets import encode_dataset, open_dataset
from pact.encodings import EOS_ID, get_tokenizer
from pact.encodings.bytes import read_text_file
from pact.encodings.copy_task import SEPARATOR_ID
from pact.errors import ConfigError, DatasetError, TokenizerMismatchError
from pact.tokenizer_training import has_same_settings, prepare_tokenizer, training_record
from tfds_layouts import LocalImagenetResized, LocalPg19, prepare

runner = CliRunner()


def _encode(*args: str):
    return runner.invoke(app, ["encode", "dataset", *args])


def _all_examples(dataset) -> dict[str, list[dict]]:
    return {split: [dataset.source(split)[i] for i in range(len(dataset.source(split)))] for split in dataset.splits}


@pytest.fixture(scope="module")
def tfds_dir(pg19_mini, shared_data, tmp_path_factory) -> Path:
    """A TFDS data dir with real `pg19` and `imagenet_resized/64x64` datasets in array_record format."""
    data_dir = tmp_path_factory.mktemp("tensorflow_datasets")
    downloads = tmp_path_factory.mktemp("downloads")
    prepare(LocalPg19(books=pg19_mini, data_dir=data_dir), downloads)
    prepare(LocalImagenetResized(images=shared_data / "images64", limit=3, data_dir=data_dir), downloads)
    return data_dir


# PG-19 folders with SentencePiece.


def test_pg19_sentencepiece_dataset(pg19_mini, tmp_path):
    result = _encode(str(pg19_mini), "--data-dir", str(tmp_path), "--tokenizer", "sentencepiece",
                     "--vocab-size", "1000", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "Tokenizer: sentencepiece version 1, vocabulary 1000" in result.stdout

    dataset = open_dataset(tmp_path / "pg19_mini")
    metadata = dataset.metadata
    assert metadata["tokenizer_training"]["split"] == "train"
    assert metadata["tokenizer_training"]["examples"] == 3
    assert isinstance(metadata["tokenizer"]["options"]["model"], str)

    # The spec alone rebuilds the tokenizer, which decodes every example back to its book.
    tokenizer = dataset.tokenizer()
    for split, examples in _all_examples(dataset).items():
        for example in examples:
            assert example["tokens"][-1] == EOS_ID
            book = read_text_file(pg19_mini / example["source"])
            assert tokenizer.decode(example["tokens"]) == book, example["source"]


def test_pg19_sentencepiece_rerun_reuses_model(pg19_mini, tmp_path):
    args = [str(pg19_mini), "--data-dir", str(tmp_path), "--tokenizer", "sentencepiece", "--vocab-size", "1000",
            "--tokenizer-option", "model_type=unigram", "--tokenizer-option", "input_sentence_size=2000",
            "--workers", "1"]
    assert _encode(*args).exit_code == 0
    spec = open_dataset(tmp_path / "pg19_mini").tokenizer_spec
    assert spec["options"]["model_type"] == "unigram"

    again = _encode(*args)
    assert again.exit_code == 0, again.output
    assert "already exists with the same tokenizer and input; reusing it" in again.stdout

    other = _encode(*args[:6], "1200", *args[7:])
    assert isinstance(other.exception, TokenizerMismatchError), other.output
    assert "exists but was made differently (tokenizer: " in str(other.exception)
    assert "Pass --overwrite to replace it" in str(other.exception)


def test_interrupted_sentencepiece_run_reuses_trained_model(pg19_mini, maestro_root, tmp_path, caplog):
    folder = tmp_path / "books"
    for split in ("train", "validation"):
        (folder / split).mkdir(parents=True)
    for book in sorted((pg19_mini / "train").glob("*.txt")):
        (folder / "train" / book.name).symlink_to(book)
    (folder / "validation" / "2641.txt").symlink_to(pg19_mini / "validation" / "2641.txt")
    (folder / "validation" / "zz_binary.txt").symlink_to(sorted(maestro_root.glob("*/*.midi"))[0])
    tokenizer = get_tokenizer("sentencepiece", vocab_size=800)

    with pytest.raises(DatasetError, match="zz_binary.txt: contains a NUL byte"):
        encode_dataset(folder, tmp_path / "data", tokenizer=tokenizer, workers=1, strict=True, show_progress=False)
    assert (tmp_path / "data" / "books.encode-cache" / "cache.json").is_file()

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pact"):
        summary = encode_dataset(folder, tmp_path / "data", tokenizer=tokenizer, workers=1, show_progress=False)
    assert "reusing the sentencepiece tokenizer trained by an earlier run" in caplog.text
    assert "training the sentencepiece tokenizer" not in caplog.text
    assert summary.files_from_cache >= 1
    assert [skipped.source for skipped in summary.skipped] == ["validation/zz_binary.txt"]


def test_training_record_and_settings(pg19_mini):
    untrained = get_tokenizer("sentencepiece", vocab_size=700)
    listing = list_inputs(pg19_mini, untrained)
    record = training_record(listing)
    assert record["examples"] == 3
    assert len(record["sha256"]) == 64

    trained, returned_record = prepare_tokenizer(untrained, listing)
    assert returned_record == record
    assert has_same_settings(untrained, trained.spec())
    assert not has_same_settings(get_tokenizer("sentencepiece", vocab_size=701), trained.spec())
    assert not has_same_settings(get_tokenizer("sentencepiece", vocab_size=700, fallback_encoding=None), trained.spec())

    # A saved spec is reused only for the same training examples.
    reused, _ = prepare_tokenizer(untrained, listing, [(trained.spec(), record)])
    assert reused.spec() == trained.spec()



def test_training_needs_a_train_split(pg19_mini, tmp_path):
    (tmp_path / "validation").mkdir()
    (tmp_path / "validation" / "2641.txt").symlink_to(pg19_mini / "validation" / "2641.txt")
    untrained = get_tokenizer("sentencepiece", vocab_size=700)
    with pytest.raises(DatasetError, match="has no train split to train the sentencepiece tokenizer on"):
        prepare_tokenizer(untrained, list_inputs(tmp_path, untrained))


# Image folders.


def test_image_folder_dataset(shared_data, tmp_path):
    images = shared_data / "images64"
    result = _encode(str(images), "--data-dir", str(tmp_path), "--tokenizer", "image",
                     "--tokenizer-option", "fit=center_crop", "--workers", "2")
    assert result.exit_code == 0, result.output
    assert "train            210       2,580,690" in result.stdout
    assert "validation        30         368,670" in result.stdout

    dataset = open_dataset(tmp_path / "images64")
    assert dataset.tokenizer_spec["options"] == {"fit": "center_crop"}
    example = dataset.source("validation")[0]
    pixels = np.asarray(Image.open(images / example["source"]).convert("RGB"))
    assert np.array_equal(example["tokens"][:-1], pixels.reshape(-1).astype(np.int32) + 2)


# Prepared TFDS datasets.


def test_tfds_pg19_matches_its_books(tfds_dir, pg19_mini, tmp_path):
    result = _encode("tfds:pg19", "--tfds-data-dir", str(tfds_dir), "--data-dir", str(tmp_path), "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "Encoded dataset tfds_pg19: 5 examples read." in result.stdout
    assert "Tokenizer: bytes version 1" in result.stdout

    dataset = open_dataset(tmp_path / "tfds_pg19")
    assert dataset.metadata["input"]["tfds"] == "pg19"
    assert dataset.metadata["input"]["feature"] == "book_text"
    tokenizer = dataset.tokenizer()
    for split, examples in _all_examples(dataset).items():
        decoded = sorted(tokenizer.decode(example["tokens"]) for example in examples)
        books = sorted(read_text_file(path).strip() for path in (pg19_mini / split).glob("*.txt"))
        assert decoded == books, split
        assert [example["source"] for example in examples] == [f"{split}/{i:09d}" for i in range(len(examples))]


def test_tfds_imagenet_resized_matches_its_images(tfds_dir, shared_data, tmp_path):
    summary = encode_dataset("tfds:imagenet_resized/64x64", tmp_path, tokenizer="image", workers=1,
                             show_progress=False, tfds_data_dir=tfds_dir)
    assert summary.name == "tfds_imagenet_resized_64x64"
    assert {split: counts.files for split, counts in summary.splits.items()} == {"train": 3, "validation": 3}

    dataset = open_dataset(summary.path)
    for split, examples in _all_examples(dataset).items():
        expected = sorted(
            (np.asarray(Image.open(path).convert("RGB")).reshape(-1).astype(np.int32) + 2).tobytes()
            for path in sorted((shared_data / "images64" / split).glob("*.png"))[:3]
        )
        assert sorted(example["tokens"][:-1].tobytes() for example in examples) == expected, split


def test_tfds_default_tokenizer_follows_the_feature(tfds_dir, tmp_path):
    result = _encode("tfds:imagenet_resized/64x64", "--tfds-data-dir", str(tfds_dir), "--data-dir", str(tmp_path),
                     "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "Tokenizer: image version 1, vocabulary 258" in result.stdout


def test_tfds_pg19_with_sentencepiece(tfds_dir, tmp_path):
    summary = encode_dataset("tfds:pg19", tmp_path, tokenizer=get_tokenizer("sentencepiece", vocab_size=900),
                             workers=1, show_progress=False, tfds_data_dir=tfds_dir)
    dataset = open_dataset(summary.path)
    assert dataset.metadata["tokenizer_training"]["examples"] == 3
    assert dataset.tokenizer().vocab_size == 900


def test_tfds_not_prepared_says_how(tmp_path):
    with pytest.raises(DatasetError, match=r"TFDS dataset pg19 is not prepared under .*--file_format=array_record"):
        encode_dataset("tfds:pg19", tmp_path / "out", tokenizer="bytes", tfds_data_dir=tmp_path, show_progress=False)


def test_tfds_unknown_dataset_is_rejected(tmp_path):
    with pytest.raises(DatasetError, match="'no_such_dataset' is neither in the TFDS catalog nor prepared"):
        encode_dataset("tfds:no_such_dataset", tmp_path / "out", tokenizer="bytes", tfds_data_dir=tmp_path,
                       show_progress=False)
    with pytest.raises(DatasetError, match="invalid TFDS dataset tfds:pg19/nonsense"):
        encode_dataset("tfds:pg19/nonsense", tmp_path / "out", tokenizer="bytes", tfds_data_dir=tmp_path,
                       show_progress=False)


def test_tfds_with_music_tokenizer_is_rejected(tfds_dir, tmp_path):
    with pytest.raises(TokenizerMismatchError, match="tokenizer 'performance' does not read text or images"):
        encode_dataset("tfds:pg19", tmp_path, tokenizer="performance", tfds_data_dir=tfds_dir, show_progress=False)
    with pytest.raises(DatasetError, match="must have exactly one Image feature .* but it has no such feature"):
        encode_dataset("tfds:pg19", tmp_path, tokenizer="image", tfds_data_dir=tfds_dir, show_progress=False)


# The synthetic copy task.


def test_copy_task_dataset(tmp_path):
    args = ["synthetic:copy", "--copy-length", "8", "--copy-examples", "6,2,2", "--vocab-size", "10",
            "--copy-seed", "3", "--workers", "1"]
    result = _encode(*args, "--data-dir", str(tmp_path / "a"))
    assert result.exit_code == 0, result.output
    assert "Encoded dataset synthetic_copy: 10 examples read." in result.stdout
    assert "Tokenizer: copy version 1, vocabulary 10" in result.stdout

    dataset = open_dataset(tmp_path / "a" / "synthetic_copy")
    assert dataset.metadata["input"] == {"layout": "copy_task", "task": "copy", "length": 8,
                                         "examples": {"train": 6, "validation": 2, "test": 2}, "seed": 3}
    assert dataset.metadata["splits"]["train"] == {"files": 6, "tokens": 6 * (2 * 8 + 2)}
    examples = _all_examples(dataset)
    assert {split: len(items) for split, items in examples.items()} == {"train": 6, "validation": 2, "test": 2}
    for items in examples.values():
        for example in items:
            tokens = example["tokens"]
            assert len(tokens) == 18
            assert tokens[8] == SEPARATOR_ID
            assert np.array_equal(tokens[9:17], tokens[:8][::-1])
            assert tokens[:8].min() >= 3
            assert tokens[:8].max() < 10
            assert tokens[17] == EOS_ID
    first_halves = {example["tokens"][:8].tobytes() for items in examples.values() for example in items}
    assert len(first_halves) == 10

    # The same seed gives the same examples, another seed others.
    assert _encode(*args, "--data-dir", str(tmp_path / "b")).exit_code == 0
    same = _all_examples(open_dataset(tmp_path / "b" / "synthetic_copy"))
    assert all(
        np.array_equal(a["tokens"], b["tokens"]) for split in examples for a, b in zip(examples[split], same[split])
    )
    other_args = [*args[:-3], "4", *args[-2:]]
    assert _encode(*other_args, "--data-dir", str(tmp_path / "c")).exit_code == 0
    other = _all_examples(open_dataset(tmp_path / "c" / "synthetic_copy"))
    assert not np.array_equal(other["train"][0]["tokens"], examples["train"][0]["tokens"])


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (["synthetic:copy", "--copy-examples", "10,5"], ConfigError, "give three counts TRAIN,VALIDATION,TEST"),
        (["synthetic:copy", "--copy-examples", "0,0,0"], ConfigError, "every split is empty"),
        (["synthetic:copy", "--copy-length", "0"], ConfigError, "invalid --copy-length 0"),
        (["synthetic:copy", "--vocab-size", "4"], ConfigError, "invalid vocab_size 4 for the copy tokenizer"),
        (["synthetic:copy", "--tokenizer", "bytes"], TokenizerMismatchError, "encoded with --tokenizer copy"),
        (["PG19", "--copy-length", "5"], ConfigError, "apply only to synthetic:copy"),
        (["PG19", "--tfds-data-dir", "/tmp"], ConfigError, "--tfds-data-dir applies only to tfds:NAME inputs"),
        (["PG19", "--tokenizer", "bytes", "--tokenizer-option", "fit"], ConfigError, "use KEY=VALUE"),
        (["PG19", "--tokenizer", "bytes", "--vocab-size", "300"], Exception, "invalid options {'vocab_size': 300}"),
    ],
)
def test_invalid_input_options_are_rejected(pg19_mini, tmp_path, args, error, message):
    args = [str(pg19_mini) if arg == "PG19" else arg for arg in args]
    result = _encode(*args, "--data-dir", str(tmp_path / "data"))
    assert isinstance(result.exception, error), result.output
    assert message in str(result.exception)
    assert not (tmp_path / "data").exists()


def test_folder_that_does_not_exist_names_other_inputs(tmp_path):
    result = _encode(str(tmp_path / "absent"), "--data-dir", str(tmp_path / "data"))
    assert isinstance(result.exception, ConfigError)
    assert "tfds:NAME or synthetic:copy" in str(result.exception)
