"""The `bytes` tokenizer: UTF-8 text as one id per byte.

Id layout (vocabulary 258):

    0        PAD
    1        EOS
    2..257   byte values 0..255 (id = byte + 2)

It needs no training and covers any text, which makes it the reference tokenizer for text
datasets such as PG-19.

Files that are not valid UTF-8 are decoded with a fallback encoding, Windows-1252 by default,
and their text is then encoded as UTF-8, so every dataset contains UTF-8 bytes. Project Gutenberg's
8-bit texts (PG-19 included) use Windows-1252 curly quotes and dashes (bytes 0x91-0x97).
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pact.encodings.base import NUM_RESERVED_IDS, Tokenizer
from pact.errors import TextReadError, TokenizerError

NUM_BYTE_VALUES = 256

# Byte ids are named like SentencePiece's byte-fallback pieces: byte 0x0A is "<0x0A>".
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def canonical_encoding_name(fallback_encoding: str | None, tokenizer_name: str) -> str | None:
    """Return Python's name of the codec `fallback_encoding` ("CP-1252" -> "cp1252"), or None.

    Raises `TokenizerError` naming the tokenizer for an unknown codec.
    """
    if fallback_encoding is None:
        return None
    try:
        return codecs.lookup(fallback_encoding).name
    except (LookupError, TypeError):
        raise TokenizerError(
            f"unknown fallback_encoding {fallback_encoding!r} for the {tokenizer_name} tokenizer. "
            "Use a Python codec name such as 'cp1252' or 'latin-1', or None"
        ) from None


def read_text_file(path: str | os.PathLike, fallback_encoding: str | None = "cp1252") -> str:
    """Read a text file exactly, line endings and byte-order mark included.

    The file is decoded as UTF-8, or with `fallback_encoding` (a Python codec name, or None
    for UTF-8 only) when it is not valid UTF-8.
    NOTE: the fallback cannot tell Windows-1252 from other 8-bit encodings, so a file in
    KOI8-R or Shift JIS, say, is read without error as the wrong characters.

    Raises `TextReadError` naming the file when it cannot be read, contains a NUL byte
    (binary or UTF-16 data) or does not decode.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise TextReadError(path, f"failed to read the file: {error.strerror}") from None

    nul_offset = data.find(b"\0")
    if nul_offset >= 0:
        raise TextReadError(
            path,
            f"contains a NUL byte at offset {nul_offset}, so it is binary or UTF-16 data, "
            "not text. Convert it to UTF-8 or remove it",
        )

    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        utf8_problem = f"byte 0x{data[error.start]:02X} at offset {error.start}"
    if fallback_encoding is None:
        raise TextReadError(path, f"not valid UTF-8 ({utf8_problem}). Convert the file to UTF-8")

    try:
        return data.decode(fallback_encoding)
    except UnicodeDecodeError as error:
        raise TextReadError(
            path,
            f"neither valid UTF-8 ({utf8_problem}) nor valid {fallback_encoding} "
            f"(byte 0x{data[error.start]:02X} at offset {error.start}). "
            "Convert the file to UTF-8",
        ) from None


class BytesTokenizer(Tokenizer):
    """UTF-8 text as byte ids, with id = byte + 2.

    `fallback_encoding` decodes files that are not valid UTF-8 (default "cp1252", the
    Windows-1252 code page). None reads strict UTF-8 only.
    """

    name = "bytes"
    version = "1"
    file_suffixes = (".txt",)
    modality = "text"
    token_unit = "byte"

    def __init__(self, fallback_encoding: str | None = "cp1252"):
        self.fallback_encoding = canonical_encoding_name(fallback_encoding, self.name)

    def read(self, path: str | os.PathLike) -> str:
        """Read a text file exactly; see `read_text_file`."""
        return read_text_file(path, self.fallback_encoding)

    def encode(self, item: str) -> np.ndarray:
        if not isinstance(item, str):
            raise TokenizerError(f"the bytes tokenizer encodes str, not {type(item).__name__}")
        try:
            data = item.encode("utf-8")
        except UnicodeEncodeError as error:
            raise TokenizerError(
                f"text cannot be encoded as UTF-8 at character {error.start}: {error.reason}"
            ) from None
        byte_values = np.frombuffer(data, dtype=np.uint8)
        return byte_values.astype(np.int32) + NUM_RESERVED_IDS

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Decode ids into text. Invalid UTF-8 becomes U+FFFD, and ids outside the byte range are dropped."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)

        eos_positions = np.flatnonzero(ids == self.eos_id)
        if eos_positions.size:
            ids = ids[: eos_positions[0]]

        byte_ids = ids[(ids >= NUM_RESERVED_IDS) & (ids < self.vocab_size)]
        data = (byte_ids - NUM_RESERVED_IDS).astype(np.uint8).tobytes()
        return data.decode("utf-8", errors="replace")

    def write(self, item: str, path: str | os.PathLike) -> None:
        # newline="" keeps "\r\n" and "\n" exactly as decoded.
        with open(path, "w", encoding="utf-8", newline="") as file:
            file.write(item)

    @property
    def vocab_size(self) -> int:
        return NUM_RESERVED_IDS + NUM_BYTE_VALUES

    def options(self) -> dict[str, Any]:
        return {"fallback_encoding": self.fallback_encoding}

    def id_to_token(self, token_id: int) -> str:
        if NUM_RESERVED_IDS <= token_id < self.vocab_size:
            return f"<0x{token_id - NUM_RESERVED_IDS:02X}>"
        return super().id_to_token(token_id)

    def token_to_id(self, token: str) -> int:
        match = _BYTE_TOKEN.fullmatch(token)
        if match:
            return int(match.group(1), 16) + NUM_RESERVED_IDS
        return super().token_to_id(token)
