"""The `sentencepiece` tokenizer: UTF-8 text as SentencePiece subword ids, trained per dataset.

`pact encode dataset BOOKS --tokenizer sentencepiece --vocab-size 8000` trains a model on the
text of the training split, then encodes every split with it. The trained model is stored
in the tokenizer's options (the serialized SentencePiece ModelProto, base64-encoded), so the
spec saved with the dataset and with every run rebuilds the same tokenizer without any other
file. A model of 8000 pieces takes about 170 kB in the spec.

Id layout: 0 PAD, 1 EOS (SentencePiece's own pad and eos pieces), 2 UNK, then the pieces.
Training makes the model lossless on the text that pact reads:

* no normalization (SentencePiece's "identity" rule) and no whitespace folding or dummy
  prefix, so spaces, tabs and line breaks survive;
* "\\r\\n" and "\\n" are pieces of their own, and text is split into lines (str.splitlines)
  for training and encoding, so pieces never cross a line break;
* byte fallback: a character outside the vocabulary becomes its UTF-8 bytes (<0x..> pieces),
  so `encode` never produces UNK.

NOTE: SentencePiece writes spaces as U+2581 internally, so a U+2581 character in the text
decodes as a space. Other text decodes to itself, which the tests check on PG-19 books and
on random Unicode text.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from pact.encodings.base import EOS_ID, PAD_ID, Tokenizer
from pact.encodings.bytes import canonical_encoding_name, read_text_file
from pact.errors import ConfigError, TokenizerError

UNK_ID = 2
MODEL_TYPES = ("bpe", "unigram")
LINE_BREAK_PIECES = ("\r\n", "\n")

# 3 reserved ids + 2 line-break pieces + 256 byte pieces + at least one character.
MIN_VOCAB_SIZE = 262
MAX_VOCAB_SIZE = 1_000_000

# SentencePiece skips training lines longer than `max_sentence_length` bytes, so longer lines
# are cut into pieces of at most this many characters (4 UTF-8 bytes each at most).
MAX_TRAINING_LINE_CHARACTERS = 4096
MAX_SENTENCE_BYTES = 4 * MAX_TRAINING_LINE_CHARACTERS

# SentencePiece errors start with a source location such as "INTERNAL: src/x.cc(12) [check] ".
_SENTENCEPIECE_LOCATION = re.compile(r"^[A-Z_]+: \S+\(\d+\) \[.*?\] ?")


class SentencePieceTokenizer(Tokenizer):
    """Text as SentencePiece ids; untrained until `train` (or a stored `model`) provides a model.

    Training settings (SentencePiece's own option names):

    * `vocab_size`: ids in total, the 3 reserved ones included.
    * `model_type`: "bpe" (default) or "unigram". BPE trains much faster and encodes slower
      at a similar compression. One run on 2 shared CPU cores (sentencepiece 0.2.3), with
      1000 pieces trained on 3 MB of PG-19 text, measured BPE at 1.3 s to train, 2.9 MB/s
      to encode and 2.50 bytes per token on a held-out book. Unigram took 28.9 s, encoded
      8.0 MB/s and reached 2.45 bytes per token.
    * `character_coverage`: fraction of characters that get pieces of their own; the rest
      fall back to bytes.
    * `input_sentence_size`: at most this many lines, sampled at random, are used for
      training (0 uses every line), which bounds memory on a large corpus.

    `fallback_encoding` decodes text files that are not valid UTF-8, as in the `bytes`
    tokenizer. `model` is the trained model (base64 of the serialized ModelProto).
    """

    name = "sentencepiece"
    version = "1"
    file_suffixes = (".txt",)
    modality = "text"
    trained_options = ("model",)

    def __init__(
        self,
        vocab_size: int = 8000,
        model_type: str = "bpe",
        character_coverage: float = 0.9995,
        input_sentence_size: int = 5_000_000,
        fallback_encoding: str | None = "cp1252",
        model: str | None = None,
    ):
        _check_integer("vocab_size", vocab_size, MIN_VOCAB_SIZE, MAX_VOCAB_SIZE)
        if model_type not in MODEL_TYPES:
            raise ConfigError(f"invalid model_type {model_type!r} for the sentencepiece tokenizer: use bpe or unigram")
        if isinstance(character_coverage, bool) or not isinstance(character_coverage, (int, float)) or not (
            0.0 < character_coverage <= 1.0
        ):
            raise ConfigError(
                f"invalid character_coverage {character_coverage!r} for the sentencepiece tokenizer: "
                "use a fraction above 0 and at most 1"
            )
        _check_integer("input_sentence_size", input_sentence_size, 0, 2**31 - 1)
        self.vocab_size_setting = vocab_size
        self.model_type = model_type
        self.character_coverage = float(character_coverage)
        self.input_sentence_size = input_sentence_size
        self.fallback_encoding = canonical_encoding_name(fallback_encoding, self.name)
        self.model = model
        self._processor = None
        if model is not None:
            self._processor = _load_processor(model)
            self._check_model()

    # Training.

    @property
    def needs_training(self) -> bool:
        return self.model is None

    def train(self, items: Iterable[str]) -> SentencePieceTokenizer:
        """Train a model on the texts `items` and return a tokenizer that uses it.

        Raises `TokenizerError` with SentencePiece's reason when training fails, for example
        when `vocab_size` is too large for the text or too small for its characters.
        """
        import sentencepiece

        model_file = io.BytesIO()
        try:
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=_training_lines(items),
                model_writer=model_file,
                vocab_size=self.vocab_size_setting,
                model_type=self.model_type,
                character_coverage=self.character_coverage,
                input_sentence_size=self.input_sentence_size,
                shuffle_input_sentence=True,
                max_sentence_length=MAX_SENTENCE_BYTES,
                pad_id=PAD_ID,
                eos_id=EOS_ID,
                unk_id=UNK_ID,
                bos_id=-1,
                byte_fallback=True,
                user_defined_symbols=list(LINE_BREAK_PIECES),
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                add_dummy_prefix=False,
                allow_whitespace_only_pieces=True,
                split_digits=True,
                num_threads=max(1, min(os.cpu_count() or 1, 16)),
                minloglevel=2,
            )
        except RuntimeError as error:
            reason = _SENTENCEPIECE_LOCATION.sub("", str(error)).strip() or "the training text is empty"
            raise TokenizerError(
                f"training the SentencePiece model (vocab_size {self.vocab_size_setting}, "
                f"model_type {self.model_type}) failed: {reason}"
            ) from None

        model = base64.b64encode(model_file.getvalue()).decode("ascii")
        return type(self)(**{**self.options(), "model": model})

    def model_proto(self) -> bytes:
        """Return the serialized SentencePiece model, as `spm_encode --model` reads it from a file."""
        self._require_model()
        return base64.b64decode(self.model)

    # Interface.

    def read(self, path: str | os.PathLike) -> str:
        """Read a text file exactly, as the `bytes` tokenizer does."""
        return read_text_file(path, self.fallback_encoding)

    def encode(self, item: str) -> np.ndarray:
        if not isinstance(item, str):
            raise TokenizerError(f"the sentencepiece tokenizer encodes str, not {type(item).__name__}")
        processor = self._require_model()
        # Training reads the text line by line (str.splitlines), and so does encoding. For
        # "\n" and "\r\n", which are pieces of their own, the ids equal those of the whole
        # text at once, and BPE encodes a 1 MB book about 3x faster this way.
        try:
            item.encode("utf-8")
        except UnicodeEncodeError as error:
            raise TokenizerError(
                f"text cannot be encoded as UTF-8 at character {error.start}: {error.reason}"
            ) from None
        lines = processor.encode(item.splitlines(keepends=True))
        if not lines:
            return np.zeros(0, dtype=np.int32)
        return np.concatenate([np.asarray(line, dtype=np.int32) for line in lines])

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Decode ids into text; PAD, UNK and ids outside the vocabulary are dropped."""
        processor = self._require_model()
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        eos_positions = np.flatnonzero(ids == self.eos_id)
        if eos_positions.size:
            ids = ids[: eos_positions[0]]
        ids = ids[(ids > UNK_ID) & (ids < self.vocab_size)]
        return processor.decode(ids.tolist())

    def write(self, item: str, path: str | os.PathLike) -> None:
        # newline="" keeps "\r\n" and "\n" exactly as decoded.
        with open(path, "w", encoding="utf-8", newline="") as file:
            file.write(item)

    @property
    def vocab_size(self) -> int:
        return self.vocab_size_setting

    def options(self) -> dict[str, Any]:
        return {
            "vocab_size": self.vocab_size_setting,
            "model_type": self.model_type,
            "character_coverage": self.character_coverage,
            "input_sentence_size": self.input_sentence_size,
            "fallback_encoding": self.fallback_encoding,
            "model": self.model,
        }

    def id_to_token(self, token_id: int) -> str:
        if UNK_ID <= token_id < self.vocab_size and self._processor is not None:
            return self._processor.id_to_piece(int(token_id))
        return super().id_to_token(token_id)

    def token_to_id(self, token: str) -> int:
        if token in ("PAD", "EOS"):
            return super().token_to_id(token)
        processor = self._require_model()
        token_id = processor.piece_to_id(token)
        if token_id == UNK_ID and token != processor.id_to_piece(UNK_ID):
            raise TokenizerError(f"unknown piece {token!r} for tokenizer {self.name!r}")
        return token_id

    # Pickles carry only `model`, and worker processes rebuild the processor from it.

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_processor"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.model is not None:
            self._processor = _load_processor(self.model)

    def __repr__(self) -> str:
        model = "untrained" if self.model is None else f"model of {len(self.model)} base64 characters"
        return (
            f"SentencePieceTokenizer(vocab_size={self.vocab_size_setting}, model_type={self.model_type!r}, {model})"
        )

    # Checks.

    def _require_model(self):
        if self._processor is None:
            raise TokenizerError(
                "the sentencepiece tokenizer is not trained yet: `pact encode dataset --tokenizer "
                "sentencepiece` trains it on the training split, or rebuild it from a saved spec"
            )
        return self._processor

    def _check_model(self) -> None:
        processor = self._processor
        if processor.get_piece_size() != self.vocab_size_setting:
            raise TokenizerError(
                f"the sentencepiece model has {processor.get_piece_size()} pieces but vocab_size is "
                f"{self.vocab_size_setting}; rebuild the tokenizer from the spec saved with the dataset"
            )
        layout = (processor.pad_id(), processor.eos_id(), processor.unk_id())
        if layout != (PAD_ID, EOS_ID, UNK_ID):
            raise TokenizerError(
                f"the sentencepiece model has pad, eos and unk ids {layout}, but pact needs "
                f"{(PAD_ID, EOS_ID, UNK_ID)}; train the model with `pact encode dataset --tokenizer sentencepiece`"
            )


def _load_processor(model: str):
    import sentencepiece

    if not isinstance(model, str):
        raise TokenizerError(f"the sentencepiece model must be a base64 string, not {type(model).__name__}")
    try:
        proto = base64.b64decode(model, validate=True)
    except (binascii.Error, ValueError):
        raise TokenizerError("the sentencepiece model is not valid base64; the saved spec is damaged") from None
    try:
        return sentencepiece.SentencePieceProcessor(model_proto=proto)
    except RuntimeError:
        raise TokenizerError(
            "the sentencepiece model does not parse as a SentencePiece ModelProto; the saved spec is damaged"
        ) from None


def _training_lines(texts: Iterable[str]) -> Iterator[str]:
    """Yield the lines of every text, line breaks kept, cut to MAX_TRAINING_LINE_CHARACTERS."""
    for text in texts:
        for line in text.splitlines(keepends=True):
            for start in range(0, len(line), MAX_TRAINING_LINE_CHARACTERS):
                yield line[start : start + MAX_TRAINING_LINE_CHARACTERS]


def _check_integer(option: str, value: Any, minimum: int, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ConfigError(
            f"invalid {option} {value!r} for the sentencepiece tokenizer: use an integer from {minimum} to {maximum}"
        )
