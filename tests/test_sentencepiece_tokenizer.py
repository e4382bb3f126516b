"""The `sentencepiece` tokenizer, trained on real PG-19 books."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pact.encodings import EOS_ID, PAD_ID, get_tokenizer, tokenizer_from_spec
from pact.encodings.sentencepiece_tokenizer import UNK_ID, SentencePieceTokenizer
from pact.errors import ConfigError, TextReadError, TokenizerError, TokenizerMismatchError

VOCAB_SIZE = 1000


@pytest.fixture(scope="module")
def trained(pg19_mini) -> SentencePieceTokenizer:
    untrained = get_tokenizer("sentencepiece", vocab_size=VOCAB_SIZE)
    books = sorted((pg19_mini / "train").glob("*.txt"))
    return untrained.train(untrained.read(book) for book in books)


@pytest.fixture(scope="module")
def validation_text(pg19_mini, trained) -> str:
    return trained.read(pg19_mini / "validation" / "2641.txt")


def test_untrained_tokenizer_needs_training():
    untrained = get_tokenizer("sentencepiece", vocab_size=VOCAB_SIZE)
    assert untrained.needs_training
    assert untrained.options()["model"] is None
    with pytest.raises(TokenizerError, match="not trained yet"):
        untrained.encode("text")


def test_trained_tokenizer_keeps_settings(trained):
    assert not trained.needs_training
    assert trained.vocab_size == VOCAB_SIZE
    assert trained.modality == "text"
    options = trained.options()
    assert options["model_type"] == "bpe"
    assert options["fallback_encoding"] == "cp1252"
    assert isinstance(options["model"], str)


def test_model_proto_loads_in_sentencepiece(trained):
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_proto=trained.model_proto())
    assert processor.get_piece_size() == VOCAB_SIZE
    assert processor.encode("Hello there") == trained.encode("Hello there").tolist()


def test_held_out_book_round_trips(trained, validation_text):
    ids = trained.encode(validation_text)
    assert ids.dtype == np.int32
    assert trained.decode(ids) == validation_text
    # PAD, EOS and UNK are never produced, and the text compresses well below 1 id per byte.
    assert ids.min() > UNK_ID
    assert ids.max() < VOCAB_SIZE
    assert len(validation_text.encode("utf-8")) / len(ids) > 2.0


def test_line_breaks_and_spaces_survive(trained):
    for text in ["  two leading spaces\r\n", "tab\tand  double space\n\n", "“curly” — dash é 😀", " "]:
        assert trained.decode(trained.encode(text)) == text


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\u2581"), max_size=200))
def test_random_text_round_trips(trained, text):
    assert trained.decode(trained.encode(text)) == text


def test_lone_surrogate_is_rejected(trained):
    with pytest.raises(TokenizerError, match="cannot be encoded as UTF-8 at character 2"):
        trained.encode("ab\ud800")


def test_line_breaks_are_pieces(trained):
    assert trained.ids_to_tokens(trained.encode("\r\n")) == ["\r\n"]
    assert trained.ids_to_tokens(trained.encode("\n")) == ["\n"]


def test_decode_skips_reserved_and_stops_at_eos(trained):
    ids = trained.encode("The end").tolist()
    noisy = [PAD_ID, *ids[:1], UNK_ID, *ids[1:], VOCAB_SIZE + 5, EOS_ID, *trained.encode("more").tolist()]
    assert trained.decode(noisy) == "The end"


def test_spec_rebuilds_same_tokenizer(trained, validation_text):
    spec = json.loads(json.dumps(trained.spec()))
    rebuilt = tokenizer_from_spec(spec, source="dataset d")
    assert rebuilt.spec() == trained.spec()
    assert np.array_equal(rebuilt.encode(validation_text[:5000]), trained.encode(validation_text[:5000]))


def test_tokenizer_pickles_for_workers(trained):
    copy = pickle.loads(pickle.dumps(trained))
    assert copy.encode("Pickled text.").tolist() == trained.encode("Pickled text.").tolist()


def test_training_is_deterministic(pg19_mini, trained):
    untrained = get_tokenizer("sentencepiece", vocab_size=VOCAB_SIZE)
    books = sorted((pg19_mini / "train").glob("*.txt"))
    again = untrained.train(untrained.read(book) for book in books)
    assert again.options()["model"] == trained.options()["model"]


def test_other_model_is_rejected_with_digests(pg19_mini, trained):
    untrained = get_tokenizer("sentencepiece", vocab_size=VOCAB_SIZE)
    other = untrained.train([trained.read(pg19_mini / "test" / "84.txt")])
    with pytest.raises(TokenizerMismatchError) as error:
        other.check_compatible(trained.spec(), "dataset /data/pg19")
    message = str(error.value)
    assert "option model:" in message
    assert "sha256" in message
    assert "dataset /data/pg19" in message
    assert len(message) < 400


def test_bytes_dataset_rejected_by_sentencepiece(trained):
    with pytest.raises(TokenizerMismatchError, match="name: 'bytes' in run r, 'sentencepiece' here"):
        trained.check_compatible(get_tokenizer("bytes").spec(), "run r")


def test_vocabulary_too_large_for_text_fails_clearly():
    untrained = get_tokenizer("sentencepiece", vocab_size=5000)
    with pytest.raises(TokenizerError) as error:
        untrained.train(["a short text\n", "another line\n"])
    message = str(error.value)
    assert "vocab_size 5000" in message
    assert "Vocabulary size too high (5000)" in message
    assert "src/" not in message


def test_empty_training_text_fails_clearly():
    with pytest.raises(TokenizerError, match="training the SentencePiece model .* failed"):
        get_tokenizer("sentencepiece", vocab_size=300).train([])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"vocab_size": 100}, "invalid vocab_size 100"),
        ({"vocab_size": "big"}, "invalid vocab_size 'big'"),
        ({"model_type": "word"}, "invalid model_type 'word'"),
        ({"character_coverage": 0}, "invalid character_coverage 0"),
        ({"input_sentence_size": -1}, "invalid input_sentence_size -1"),
    ],
)
def test_invalid_settings_are_rejected(options, message):
    with pytest.raises(ConfigError, match=message):
        get_tokenizer("sentencepiece", **options)


def test_damaged_model_is_rejected(trained):
    options = trained.options()
    with pytest.raises(TokenizerError, match="not valid base64"):
        get_tokenizer("sentencepiece", **{**options, "model": "not base64!"})
    with pytest.raises(TokenizerError, match="does not parse"):
        get_tokenizer("sentencepiece", **{**options, "model": "Z2FyYmFnZQ=="})
    with pytest.raises(TokenizerError, match="has 1000 pieces but vocab_size is 2000"):
        get_tokenizer("sentencepiece", **{**options, "vocab_size": 2000})


def test_binary_file_is_rejected(trained, maestro_root):
    midi = sorted(maestro_root.glob("*/*.midi"))[0]
    with pytest.raises(TextReadError, match="contains a NUL byte"):
        trained.read(midi)


def test_unknown_piece_name_is_rejected(trained):
    assert trained.token_to_id(trained.id_to_token(500)) == 500
    with pytest.raises(TokenizerError, match="unknown piece 'no-such-piece'"):
        trained.token_to_id("no-such-piece")
