"""The tokenizer interface that every encoding plug-in implements.

A tokenizer turns one item (a MIDI performance, a text, an image) into a 1-D array of int32
ids and back. Ids 0 and 1 are reserved in every tokenizer:

    0  PAD_ID  padding; never produced by `encode`, ignored by `decode`
    1  EOS_ID  end of sequence; the dataset appends it to every document, `decode` stops there

so a model, a dataset and the data pipeline can rely on them without knowing the tokenizer.

A tokenizer is described by its `spec()`: name, version, vocabulary size and the options it
was built with. The spec is saved with every dataset and run, and `check_compatible`
rejects data or checkpoints made by another tokenizer, version or vocabulary.

A tokenizer that learns its vocabulary from data (SentencePiece) is built untrained, with its
training settings, and `train` returns a trained copy whose options contain everything that
rebuilds it, so the spec alone is enough.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import os
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np

from pact.errors import TokenizerMismatchError

PAD_ID = 0
EOS_ID = 1
NUM_RESERVED_IDS = 2


@dataclasses.dataclass(frozen=True)
class PairedEvents:
    """Ids that open and close numbered slots, as NOTE_ON and NOTE_OFF do for each pitch.

    A closing id is valid only while its slot has an open event: NOTE_OFF of a key that is not
    sounding means nothing. The sampler counts the open events of every slot and never draws
    an invalid closing id (`pact sample --constrain`). Their probability goes to the valid
    closing ids.
    """

    opens: np.ndarray
    """[V] int32: the slot each id opens, or -1."""
    closes: np.ndarray
    """[V] int32: the slot each id closes, or -1."""
    num_slots: int

    def open_counts(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Count the open events [num_slots] int32 of each slot after `ids`. Closing an empty slot does nothing."""
        counts = np.zeros(self.num_slots, np.int32)
        for token in np.asarray(ids, np.int64):
            if self.opens[token] >= 0:
                counts[self.opens[token]] += 1
            elif self.closes[token] >= 0 and counts[self.closes[token]] > 0:
                counts[self.closes[token]] -= 1
        return counts


class Tokenizer(abc.ABC):
    """Base class of the tokenizer plug-ins.

    Subclasses set the class attributes and implement `read`, `encode`, `decode`, `write`,
    `vocab_size` and `options`; the file-level methods are built from those.
    """

    name: ClassVar[str]
    """Registry name, for example "performance"."""

    version: ClassVar[str]
    """Bumped whenever the same input would give other ids."""

    file_suffixes: ClassVar[tuple[str, ...]]
    """Lower-case suffixes of the files `read` accepts, for example (".mid", ".midi")."""

    pad_id: ClassVar[int] = PAD_ID
    eos_id: ClassVar[int] = EOS_ID
    num_reserved_ids: ClassVar[int] = NUM_RESERVED_IDS

    modality: ClassVar[str | None] = None
    """Kind of data: "music", "text", "image", "copy" (the synthetic copy task) or None.

    It selects the metrics of `pact eval benchmark` (bits per byte for text, bits per
    dimension for images, mirrored-half accuracy for the copy task) and the feature read
    from a TFDS dataset ("text" reads a Text feature, "image" an Image feature).
    """

    token_unit: ClassVar[str] = "token"
    """Unit of one id in printed metrics, for example "event" for performance ids."""

    position_axes: ClassVar[tuple[int, ...] | None] = None
    """Shape of the grid that a document's ids fill in row-major order, or None for a plain
    sequence. For images it is (rows, columns, channels), and `axis_indices` maps a token's
    index in the document to its index on each axis, for learned per-axis position embeddings."""

    def paired_events(self) -> PairedEvents | None:
        """Ids that open and close slots (see `PairedEvents`), or None when the vocabulary has none."""
        return None

    # Items and ids.

    @abc.abstractmethod
    def read(self, path: str | os.PathLike) -> Any:
        """Read one item from a file; raise a `PactError` subclass naming the file if it is unreadable."""

    @abc.abstractmethod
    def encode(self, item: Any) -> np.ndarray:
        """Encode an item as a 1-D int32 array of ids, without EOS."""

    @abc.abstractmethod
    def decode(self, ids: Sequence[int] | np.ndarray) -> Any:
        """Decode ids into an item.

        Must accept any sequence of ids in [0, vocab_size): padding is skipped, decoding stops at
        the first EOS, and ids that make no sense in their place are dropped, never raised on.
        """

    @abc.abstractmethod
    def write(self, item: Any, path: str | os.PathLike) -> None:
        """Write a decoded item to a file in the tokenizer's native format."""

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, the reserved ones included."""

    @abc.abstractmethod
    def options(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this tokenizer; JSON-serialisable."""

    # Training, for tokenizers that learn their vocabulary from data.

    trained_options: ClassVar[tuple[str, ...]] = ()
    """Options that `train` fills in, such as the learned model.

    The other options are the training settings. An untrained tokenizer and its trained
    copy have the same training settings."""

    @property
    def needs_training(self) -> bool:
        """Whether `train` must run before this tokenizer can encode."""
        return False

    def train(self, items: Iterable[Any]) -> Tokenizer:
        """Return a trained copy of this tokenizer, learned from `items` as `read` returns them."""
        from pact.errors import TokenizerError

        raise TokenizerError(f"tokenizer {self.name!r} has a fixed vocabulary and is not trained")

    # Token names, for printing and for token files written by hand.

    def id_to_token(self, token_id: int) -> str:
        """Name of one id; subclasses with named events override this."""
        if token_id == self.pad_id:
            return "PAD"
        if token_id == self.eos_id:
            return "EOS"
        return str(token_id)

    def token_to_id(self, token: str) -> int:
        """Inverse of `id_to_token`; raises `TokenizerError` for an unknown name."""
        from pact.errors import TokenizerError

        if token == "PAD":
            return self.pad_id
        if token == "EOS":
            return self.eos_id
        try:
            token_id = int(token)
        except ValueError:
            raise TokenizerError(f"unknown token {token!r} for tokenizer {self.name!r}") from None
        if not 0 <= token_id < self.vocab_size:
            raise TokenizerError(
                f"token id {token_id} is outside the vocabulary [0, {self.vocab_size}) of {self.name!r}"
            )
        return token_id

    def ids_to_tokens(self, ids: Sequence[int] | np.ndarray) -> list[str]:
        return [self.id_to_token(int(i)) for i in ids]

    def tokens_to_ids(self, tokens: Sequence[str]) -> np.ndarray:
        return np.asarray([self.token_to_id(t) for t in tokens], dtype=np.int32)

    def notices(self, item: Any) -> list[str]:
        """Sentences about what `read` merged, dropped or repaired in `item`, for printing.

        The default has none; tokenizers whose reader changes its input override this.
        """
        return []

    # Files.

    def encode_file(self, path: str | os.PathLike) -> np.ndarray:
        """Read and encode one file; the same code serves `pact encode file` and datasets."""
        return self.encode(self.read(path))

    def decode_to_file(self, ids: Sequence[int] | np.ndarray, path: str | os.PathLike) -> Any:
        """Decode ids and write the item to `path`; returns the item."""
        item = self.decode(ids)
        self.write(item, path)
        return item

    # Description and compatibility.

    def spec(self) -> dict[str, Any]:
        """JSON-serialisable description saved with every dataset and run."""
        return {
            "name": self.name,
            "version": self.version,
            "vocab_size": self.vocab_size,
            "options": self.options(),
        }

    def check_compatible(self, other_spec: dict[str, Any], source: str) -> None:
        """Raise `TokenizerMismatchError` unless `other_spec` describes this same tokenizer.

        `source` names where the other spec comes from ("dataset /data/maestro", "run runs/a")
        and appears in the message next to both descriptions.
        """
        mine = self.spec()
        differences = [
            f"{key}: {_describe_value(other_spec.get(key))} in {source}, {_describe_value(mine[key])} here"
            for key in ("name", "version", "vocab_size")
            if other_spec.get(key) != mine[key]
        ]
        other_options = other_spec.get("options")
        if not isinstance(other_options, dict) or other_spec.get("name") != mine["name"]:
            if other_options != mine["options"]:
                differences.append(
                    f"options: {_describe_value(other_options)} in {source}, {_describe_value(mine['options'])} here"
                )
        else:
            # Name only the options that differ, because some are long (a trained model).
            for key in sorted(set(other_options) | set(mine["options"])):
                if other_options.get(key) != mine["options"].get(key):
                    differences.append(
                        f"option {key}: {_describe_value(other_options.get(key))} in {source}, "
                        f"{_describe_value(mine['options'].get(key))} here"
                    )
        if differences:
            raise TokenizerMismatchError(
                f"{source} was made with another tokenizer ({'; '.join(differences)}); "
                "re-encode the data or use a run made with the same tokenizer"
            )

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({options})"


def axis_indices(token_index, axes: Sequence[int]) -> tuple:
    """Return the index on each axis of the token at `token_index` of a grid of shape `axes`.

    `token_index` counts the document's ids from 0, without the leading EOS that the model
    reads before a document (so model input position p is token index p - 1). It may be an
    int, a NumPy array or a JAX array, traced ones included: only // and % are used. The
    result is meaningful for 0 <= token_index < prod(axes). The start token and the final EOS
    lie outside the grid, so a model gives them their own embedding.
    Example: with axes (64, 64, 3), token index 200 is row 1, column 2, channel 2.
    """
    indices = []
    stride = 1
    for size in axes:
        stride *= size
    for size in axes:
        stride //= size
        indices.append(token_index // stride % size)
    return tuple(indices)


# Maximum length of a string printed whole in a mismatch message. A longer one, such as a
# trained model stored in the options, is shown by its length and digest.
_MAX_PRINTED_STRING = 80


def _describe_value(value: Any) -> str:
    """Return repr(value), with every long string in it replaced by its length and SHA-256 prefix."""

    def shorten(item: Any) -> Any:
        if isinstance(item, str) and len(item) > _MAX_PRINTED_STRING:
            digest = hashlib.sha256(item.encode("utf-8")).hexdigest()[:12]
            return _Placeholder(f"<{len(item)} characters, sha256 {digest}>")
        if isinstance(item, dict):
            return {key: shorten(inner) for key, inner in item.items()}
        if isinstance(item, list):
            return [shorten(inner) for inner in item]
        return item

    return repr(shorten(value))


class _Placeholder(str):
    """A string that prints without quotes inside a repr."""

    def __repr__(self) -> str:
        return str(self)
