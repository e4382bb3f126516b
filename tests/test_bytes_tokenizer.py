"""The `bytes` tokenizer on real PG-19 books and on files that are not UTF-8 text."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pact.encodings import EOS_ID, PAD_ID, get_tokenizer, tokenizer_from_spec
from pact.encodings.bytes import BytesTokenizer
from pact.errors import TextReadError, TokenizerError, TokenizerMismatchError


@pytest.fixture(scope="module")
def tokenizer() -> BytesTokenizer:
    return get_tokenizer("bytes")


@pytest.fixture(scope="module")
def books(pg19_mini):
    return sorted(pg19_mini.glob("*/*.txt"))


@pytest.fixture(scope="module")
def midi_file(maestro_root):
    return sorted(maestro_root.glob("*/*.midi"))[0]


def test_registry_builds_bytes_tokenizer(tokenizer):
    assert isinstance(tokenizer, BytesTokenizer)
    assert tokenizer.vocab_size == 258
    assert tokenizer.file_suffixes == (".txt",)
    assert tokenizer.spec() == {
        "name": "bytes",
        "version": "1",
        "vocab_size": 258,
        "options": {"fallback_encoding": "cp1252"},
    }


def test_spec_rebuilds_same_tokenizer(tokenizer):
    rebuilt = tokenizer_from_spec(tokenizer.spec())
    assert rebuilt.spec() == tokenizer.spec()

    strict = get_tokenizer("bytes", fallback_encoding=None)
    with pytest.raises(TokenizerMismatchError, match="fallback_encoding"):
        strict.check_compatible(tokenizer.spec(), "dataset d")


def test_ascii_ids_are_byte_plus_two(tokenizer):
    ids = tokenizer.encode("Hi\n")
    assert ids.dtype == np.int32
    assert ids.tolist() == [ord("H") + 2, ord("i") + 2, ord("\n") + 2]


def test_non_ascii_text_encodes_as_utf8(tokenizer):
    ids = tokenizer.encode("é“")
    assert ids.tolist() == [byte + 2 for byte in "é“".encode("utf-8")]
    assert tokenizer.decode(ids) == "é“"


def test_books_round_trip(tokenizer, books):
    for book in books:
        text = tokenizer.read(book)
        ids = tokenizer.encode_file(book)
        assert ids.dtype == np.int32
        assert ids.min() >= 2
        assert ids.max() < tokenizer.vocab_size
        assert tokenizer.decode(ids) == text, book


def test_windows_1252_book_reads_as_its_characters(tokenizer, pg19_mini):
    # "A Room with a View" is stored in Windows-1252: byte 0x93 is a left double quote.
    book = pg19_mini / "validation" / "2641.txt"
    raw = book.read_bytes()
    assert b"\x93" in raw

    text = tokenizer.read(book)
    assert text == raw.decode("cp1252")
    assert "\u201c" in text


def test_strict_utf8_rejects_windows_1252_book(pg19_mini):
    strict = get_tokenizer("bytes", fallback_encoding=None)
    book = pg19_mini / "validation" / "2641.txt"
    with pytest.raises(TextReadError, match=r"2641\.txt: not valid UTF-8 \(byte 0x93 at offset 975\)"):
        strict.read(book)


def test_binary_file_is_rejected_with_its_name(tokenizer, midi_file, tmp_path):
    renamed = tmp_path / "song.txt"
    shutil.copy(midi_file, renamed)
    with pytest.raises(TextReadError) as caught:
        tokenizer.read(renamed)
    assert caught.value.path == str(renamed)
    assert "NUL byte at offset 4" in caught.value.reason


def test_undecodable_bytes_are_rejected(tokenizer, pg19_mini, tmp_path):
    # 0x81 is undefined in Windows-1252 and cannot start a UTF-8 character.
    damaged = tmp_path / "damaged.txt"
    damaged.write_bytes((pg19_mini / "test" / "84.txt").read_bytes()[:500] + b"\x81 tail")
    with pytest.raises(TextReadError, match="neither valid UTF-8 .* nor valid cp1252 .*offset 500"):
        tokenizer.read(damaged)


def test_missing_file_is_rejected(tokenizer, tmp_path):
    with pytest.raises(TextReadError, match="absent.txt: failed to read the file: No such file"):
        tokenizer.read(tmp_path / "absent.txt")


def test_unknown_fallback_encoding_is_rejected():
    with pytest.raises(TokenizerError, match="unknown fallback_encoding 'klingon'"):
        get_tokenizer("bytes", fallback_encoding="klingon")


def test_decode_skips_pad_and_stops_at_eos(tokenizer):
    ids = [PAD_ID, ord("a") + 2, PAD_ID, ord("b") + 2, EOS_ID, ord("c") + 2]
    assert tokenizer.decode(ids) == "ab"


def test_decode_replaces_invalid_utf8(tokenizer):
    # A lone continuation byte, then a truncated two-byte sequence.
    ids = [0x80 + 2, ord("x") + 2, 0xC3 + 2]
    assert tokenizer.decode(ids) == "\ufffdx\ufffd"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=257), max_size=300))
def test_decode_accepts_any_ids(ids):
    text = BytesTokenizer().decode(ids)
    assert isinstance(text, str)


def test_write_keeps_line_endings(tokenizer, books, tmp_path):
    text = tokenizer.read(books[0])
    assert "\r\n" in text

    out = tmp_path / "copy.txt"
    item = tokenizer.decode_to_file(tokenizer.encode(text), out)
    assert item == text
    assert out.read_bytes() == text.encode("utf-8")


def test_token_names_round_trip(tokenizer):
    ids = np.array([PAD_ID, EOS_ID, 2, ord("\n") + 2, 257], dtype=np.int32)
    names = tokenizer.ids_to_tokens(ids)
    assert names == ["PAD", "EOS", "<0x00>", "<0x0A>", "<0xFF>"]
    assert tokenizer.tokens_to_ids(names).tolist() == ids.tolist()
