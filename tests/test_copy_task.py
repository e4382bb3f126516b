"""The `copy` tokenizer and the generator of the synthetic copy task."""

from __future__ import annotations

import numpy as np
import pytest

from pact.dataset_inputs import SourceFile
from pact.dataset_sources import CopyTaskReader, CopyTaskSettings, parse_copy_examples
from pact.encodings import EOS_ID, PAD_ID, get_tokenizer, tokenizer_from_spec
from pact.encodings.copy_task import (
    SEPARATOR_ID,
    CopyExample,
    CopyTaskTokenizer,
    context_shortfall_message,
    generate_copy_example,
    required_context,
)
from pact.errors import ConfigError, TextReadError, TokenizerError, TokenizerMismatchError


@pytest.fixture(scope="module")
def tokenizer() -> CopyTaskTokenizer:
    return get_tokenizer("copy", vocab_size=8)


def test_layout_of_a_mirrored_example(tokenizer):
    ids = tokenizer.encode(CopyExample.mirrored([0, 4, 1]))
    assert ids.dtype == np.int32
    assert ids.tolist() == [3, 7, 4, SEPARATOR_ID, 4, 7, 3]
    assert tokenizer.ids_to_tokens(ids[:4]) == ["SYMBOL_0", "SYMBOL_4", "SYMBOL_1", "SEP"]
    assert tokenizer.tokens_to_ids(["SYMBOL_4", "SEP", "EOS"]).tolist() == [7, SEPARATOR_ID, EOS_ID]
    assert tokenizer.num_symbols == 5
    assert tokenizer.vocab_size == 8


def test_mirrored_half_ends_before_eos(tokenizer):
    ids = np.append(tokenizer.encode(CopyExample.mirrored([0, 4, 1])), EOS_ID)
    assert tokenizer.mirrored_half(ids) == slice(4, 7)
    assert tokenizer.mirrored_half([3, 4, 5]) == slice(3, 3)


def test_decode_splits_at_first_separator(tokenizer):
    example = tokenizer.decode([PAD_ID, 3, 4, SEPARATOR_ID, 4, SEPARATOR_ID, 3, 99, EOS_ID, 5])
    assert example.first.tolist() == [0, 1]
    assert example.second.tolist() == [1, 0]
    assert example.is_correct
    unfinished = tokenizer.decode([3, 4, 5])
    assert unfinished.first.tolist() == [0, 1, 2]
    assert unfinished.second.tolist() == []


def test_file_round_trip(tokenizer, tmp_path):
    path = tmp_path / "example.txt"
    tokenizer.write(CopyExample(first=np.array([1, 2, 3]), second=np.array([3, 0])), path)
    assert path.read_text() == "1 2 3 | 3 0\n"
    example = tokenizer.read(path)
    assert example.first.tolist() == [1, 2, 3]
    assert example.second.tolist() == [3, 0]
    assert not example.is_correct

    (tmp_path / "first_half.txt").write_text("4 0 2\n")
    assert tokenizer.read(tmp_path / "first_half.txt").second.tolist() == [2, 0, 4]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 2 | 2 | 1", "contains 2 '|' separators"),
        ("1 two 3", "not a copy example of symbol numbers"),
        ("1 9 3", "symbols range from 1 to 9, but this copy tokenizer has 5 symbols"),
    ],
)
def test_invalid_files_name_the_file(tokenizer, tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(TextReadError, match=message) as error:
        tokenizer.read(path)
    assert "bad.txt" in str(error.value)


def test_out_of_range_symbols_are_rejected(tokenizer):
    with pytest.raises(TokenizerError, match="outside \\[0, 5\\)"):
        tokenizer.encode(CopyExample.mirrored([0, 5]))
    with pytest.raises(TokenizerError, match="encodes CopyExample, not list"):
        tokenizer.encode([1, 2])


def test_vocabulary_is_part_of_the_spec(tokenizer):
    assert tokenizer_from_spec(tokenizer.spec()).vocab_size == 8
    with pytest.raises(TokenizerMismatchError, match="vocab_size: 16 in dataset d, 8 here"):
        tokenizer.check_compatible(get_tokenizer("copy").spec(), "dataset d")
    with pytest.raises(ConfigError, match="invalid vocab_size 4"):
        get_tokenizer("copy", vocab_size=4)


def test_generated_examples_depend_on_seed_split_and_index():
    def read(settings, split, index):
        reader = CopyTaskReader(settings, num_symbols=10)
        return reader.read(SourceFile(f"{split}/{index}", None, split, 0, 0, record=index, origin="synthetic:copy"))

    settings = CopyTaskSettings(length=50, seed=7)
    first = read(settings, "train", 0)
    assert first.is_correct
    assert len(first.first) == 50
    assert np.array_equal(read(settings, "train", 0).first, first.first)
    assert not np.array_equal(read(settings, "train", 1).first, first.first)
    assert not np.array_equal(read(settings, "validation", 0).first, first.first)
    assert not np.array_equal(read(CopyTaskSettings(length=50, seed=8), "train", 0).first, first.first)


def test_generated_symbols_are_uniform():
    example = generate_copy_example(np.random.default_rng(0), length=20_000, num_symbols=4)
    counts = np.bincount(example.first, minlength=4)
    assert counts.min() > 4_700
    assert counts.max() < 5_300


def test_copy_examples_parse():
    assert parse_copy_examples("10, 2,3") == {"train": 10, "validation": 2, "test": 3}
    with pytest.raises(ConfigError, match="give three counts"):
        parse_copy_examples("10,-2,3")
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        CopyTaskSettings(examples={"dev": 3})


def _sources_out_of_reach(length: int, context: int, block_size: int) -> int:
    """Count mirrored targets whose source is missing from their evaluation window's inputs."""
    from pact.evaluate import document_windows

    tokenizer = CopyTaskTokenizer()
    example = CopyExample.mirrored(np.arange(length) % tokenizer.num_symbols)
    document = np.concatenate([tokenizer.encode(example), [EOS_ID]])
    missing = 0
    for window in document_windows(document, context, block_size):
        # The inputs are sequence[start:last], right-aligned, and the sequence has no PAD.
        last = int(window.positions.max())
        start = last - int(np.count_nonzero(window.inputs != PAD_ID))
        for target in window.positions[window.positions >= 0]:
            # With the leading EOS, mirrored symbol j sits at index length + 2 + j and repeats
            # the symbol at index length - j.
            j = int(target) - (length + 2)
            if 0 <= j < length and length - j < start:
                missing += 1
    return missing


@pytest.mark.parametrize("block_size", [2, 4])
def test_required_context_reaches_every_source(block_size):
    length = 6
    assert _sources_out_of_reach(length, required_context(length), block_size) == 0
    assert _sources_out_of_reach(length, required_context(length) - 1, block_size) > 0


def test_single_target_blocks_need_one_input_less():
    # A block of one target does not share its window with the final EOS.
    length = 6
    assert _sources_out_of_reach(length, required_context(length) - 1, 1) == 0
    assert _sources_out_of_reach(length, required_context(length) - 2, 1) > 0


def test_short_context_message_names_the_fix():
    message = context_shortfall_message(1024, 2048)
    assert "model.max_context=2048" in message
    assert "at least 2049" in message
    assert context_shortfall_message(1024, 2049) is None


def test_training_checks_copy_context():
    from pact.config import apply_overrides, get_preset
    from pact.train import _copy_context_shortfall

    copy_metadata = {"input": {"layout": "copy_task", "task": "copy", "length": 300}}
    short = apply_overrides(get_preset("tiny"), ["model.max_context=512"])
    long = apply_overrides(get_preset("tiny"), ["model.max_context=601"])
    assert "at least 601" in _copy_context_shortfall(short, copy_metadata)
    assert _copy_context_shortfall(long, copy_metadata) is None
    assert _copy_context_shortfall(short, {"input": {"layout": "maestro"}}) is None
