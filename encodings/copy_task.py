"""The `copy` tokenizer: the synthetic copy task, random symbols followed by their mirror image.

Id layout for a vocabulary of V ids:

    0          PAD
    1          EOS
    2          SEP, between the two halves
    3..V-1     symbols 0..V-4

A copy example of length L is [s_1 .. s_L, SEP, s_L .. s_1]: L random symbols, the separator,
then the same symbols in reverse order. The j-th mirrored token (from 0) repeats the token
2j + 2 positions before it, so predicting the mirrored half checks recall over distances from
2 to 2L tokens. `pact encode dataset synthetic:copy` generates such datasets (see
`pact.dataset_sources`), and `pact eval benchmark` reports exact-match accuracy on the
mirrored half.

Files hold one example as text: the symbols of the first half separated by spaces, then
" | " and the second half, for example "3 1 4 | 4 1 3". A file without "|" contains only the
first half, and `read` completes it with its mirror image.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pact.encodings.base import NUM_RESERVED_IDS, Tokenizer
from pact.encodings.bytes import read_text_file
from pact.errors import ConfigError, TextReadError, TokenizerError

SEPARATOR_ID = NUM_RESERVED_IDS
FIRST_SYMBOL_ID = SEPARATOR_ID + 1
MIN_VOCAB_SIZE = FIRST_SYMBOL_ID + 2  # at least two symbols
MAX_VOCAB_SIZE = 1_000_000


@dataclasses.dataclass(frozen=True)
class CopyExample:
    """The two halves of one copy example, as symbol values (not ids)."""

    first: np.ndarray  # (L,) int64, the random symbols
    second: np.ndarray  # (K,) int64, the mirror image of `first` in a correct example

    @classmethod
    def mirrored(cls, symbols: Sequence[int] | np.ndarray) -> CopyExample:
        """Build the correct example for `symbols`: the symbols, then the same reversed."""
        first = np.asarray(symbols, dtype=np.int64).reshape(-1)
        return cls(first=first, second=first[::-1].copy())

    @property
    def is_correct(self) -> bool:
        """Whether the second half is exactly the first half reversed."""
        return np.array_equal(self.second, self.first[::-1])


def required_context(length: int) -> int:
    """Return the minimum context M that contains the source of every mirrored target.

    For examples of L symbols read with the leading EOS, the last mirrored symbol sits 2L
    positions after the first symbol, which it repeats. A window that scores it together with
    the final EOS (an evaluation block, or a training crop that ends at the document end)
    therefore has to contain 2L + 1 inputs.
    """
    return 2 * length + 1


def context_shortfall_message(length: int, max_context: int) -> str | None:
    """Explain why `max_context` is too short for copy examples of `length` symbols, or return None."""
    needed = required_context(length)
    if max_context >= needed:
        return None
    return (
        f"model.max_context={max_context} is too short for copy examples of {length} symbols: "
        f"the last mirrored symbols repeat tokens up to {2 * length} positions back, so some of "
        f"them can never be predicted. Set model.max_context to at least {needed}"
    )


def generate_copy_example(rng: np.random.Generator, length: int, num_symbols: int) -> CopyExample:
    """Draw `length` symbols uniformly from [0, num_symbols) and return the mirrored example."""
    return CopyExample.mirrored(rng.integers(0, num_symbols, size=length))


class CopyTaskTokenizer(Tokenizer):
    """Copy examples as ids (layout in the module docstring); `vocab_size` counts every id."""

    name = "copy"
    version = "1"
    file_suffixes = (".txt",)
    modality = "copy"
    token_unit = "symbol"

    def __init__(self, vocab_size: int = 16):
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or not (
            MIN_VOCAB_SIZE <= vocab_size <= MAX_VOCAB_SIZE
        ):
            raise ConfigError(
                f"invalid vocab_size {vocab_size!r} for the copy tokenizer: use an integer from "
                f"{MIN_VOCAB_SIZE} to {MAX_VOCAB_SIZE} (3 reserved ids, then the symbols)"
            )
        self._vocab_size = vocab_size

    @property
    def num_symbols(self) -> int:
        return self._vocab_size - FIRST_SYMBOL_ID

    def read(self, path: str | os.PathLike) -> CopyExample:
        """Read one example from a text file (format in the module docstring).

        Raises `TextReadError` naming the file when it is not text, contains anything but
        symbol numbers, or uses a symbol outside [0, num_symbols).
        """
        text = read_text_file(path, fallback_encoding=None)
        halves = text.split("|")
        if len(halves) > 2:
            raise TextReadError(path, f"contains {len(halves) - 1} '|' separators; a copy example has at most one")
        try:
            parsed = [np.asarray([int(word) for word in half.split()], dtype=np.int64) for half in halves]
        except ValueError as error:
            raise TextReadError(path, f"not a copy example of symbol numbers separated by spaces: {error}") from None
        for half in parsed:
            if half.size and (half.min() < 0 or half.max() >= self.num_symbols):
                raise TextReadError(
                    path,
                    f"symbols range from {half.min()} to {half.max()}, but this copy tokenizer has "
                    f"{self.num_symbols} symbols (0 to {self.num_symbols - 1}). Use a larger --vocab-size",
                )
        if len(parsed) == 1:
            return CopyExample.mirrored(parsed[0])
        return CopyExample(first=parsed[0], second=parsed[1])

    def encode(self, item: CopyExample) -> np.ndarray:
        """Encode an example as first-half ids, SEP, then second-half ids."""
        if not isinstance(item, CopyExample):
            raise TokenizerError(f"the copy tokenizer encodes CopyExample, not {type(item).__name__}")
        for half in (item.first, item.second):
            if half.size and (half.min() < 0 or half.max() >= self.num_symbols):
                raise TokenizerError(
                    f"copy example symbols range from {half.min()} to {half.max()}, outside "
                    f"[0, {self.num_symbols}) of this tokenizer"
                )
        return np.concatenate(
            [item.first + FIRST_SYMBOL_ID, [SEPARATOR_ID], item.second + FIRST_SYMBOL_ID]
        ).astype(np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> CopyExample:
        """Decode ids into an example; the second half is empty when no SEP was produced.

        PAD, ids outside the vocabulary and every SEP after the first are dropped, and
        decoding stops at the first EOS.
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        eos_positions = np.flatnonzero(ids == self.eos_id)
        if eos_positions.size:
            ids = ids[: eos_positions[0]]
        separators = np.flatnonzero(ids == SEPARATOR_ID)
        split = separators[0] if separators.size else len(ids)
        halves = [ids[:split], ids[split + 1 :]]
        first, second = (
            half[(half >= FIRST_SYMBOL_ID) & (half < self._vocab_size)] - FIRST_SYMBOL_ID for half in halves
        )
        return CopyExample(first=first, second=second)

    def write(self, item: CopyExample, path: str | os.PathLike) -> None:
        line = " ".join(map(str, item.first.tolist())) + " | " + " ".join(map(str, item.second.tolist()))
        Path(path).write_text(line.strip() + "\n", encoding="utf-8")

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def options(self) -> dict[str, Any]:
        return {"vocab_size": self._vocab_size}

    def mirrored_half(self, ids: Sequence[int] | np.ndarray) -> slice:
        """Return the slice of `ids` with the second half: after the first SEP, up to EOS."""
        ids = np.asarray(ids).reshape(-1)
        separators = np.flatnonzero(ids == SEPARATOR_ID)
        if not separators.size:
            return slice(len(ids), len(ids))
        end_positions = np.flatnonzero(ids == self.eos_id)
        end = int(end_positions[0]) if end_positions.size else len(ids)
        return slice(int(separators[0]) + 1, max(end, int(separators[0]) + 1))

    def id_to_token(self, token_id: int) -> str:
        if token_id == SEPARATOR_ID:
            return "SEP"
        if FIRST_SYMBOL_ID <= token_id < self._vocab_size:
            return f"SYMBOL_{token_id - FIRST_SYMBOL_ID}"
        return super().id_to_token(token_id)

    def token_to_id(self, token: str) -> int:
        if token == "SEP":
            return SEPARATOR_ID
        if token.startswith("SYMBOL_") and token[len("SYMBOL_") :].isdigit():
            symbol = int(token[len("SYMBOL_") :])
            if symbol < self.num_symbols:
                return symbol + FIRST_SYMBOL_ID
        return super().token_to_id(token)
