"""Metrics of `pact eval benchmark` that depend on the kind of data.

Strided evaluation (`pact.evaluate`) scores every token of a document once. `DocumentScores`
gathers those scores per document, and when a document is complete it passes

    tokens   int [T]     the document's ids, its final EOS included
    nll      float [T]   nll[i] = -ln p(tokens[i] | the tokens before it), in nats
    correct  bool [T]    whether the most likely id was tokens[i]

to the metrics that the tokenizer's `modality` selects:

    text    bits per byte: the summed NLL in bits over the UTF-8 bytes of the decoded text
    image   bits per dimension: the mean NLL in bits of the sub-pixel targets (EOS left out)
    copy    exact match on the mirrored half under teacher forcing: per token, and the
            fraction of documents whose whole mirrored half is predicted correctly
"""

from __future__ import annotations

import abc
import math
from typing import Any

import numpy as np

from pact.encodings import EOS_ID, Tokenizer


class DocumentMetric(abc.ABC):
    """Accumulates one metric over whole documents."""

    @abc.abstractmethod
    def add(self, tokens: np.ndarray, nll: np.ndarray, correct: np.ndarray) -> None:
        """Add one scored document (arrays described in the module docstring)."""

    @abc.abstractmethod
    def result(self) -> dict[str, Any]:
        """Return the metric's values, named as in the JSON output."""


class BitsPerByte(DocumentMetric):
    """Summed NLL in bits divided by the UTF-8 bytes of the decoded documents.

    The EOS target's NLL counts and the EOS itself adds no byte, so a model must also learn
    where documents end.
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.nll = 0.0
        self.bytes = 0
        self.tokens = 0

    def add(self, tokens, nll, correct) -> None:
        text = self.tokenizer.decode(tokens)
        self.bytes += len(text.encode("utf-8"))
        self.tokens += len(tokens)
        self.nll += float(np.sum(nll, dtype=np.float64))

    def result(self) -> dict[str, Any]:
        return {
            "bits_per_byte": self.nll / math.log(2) / max(self.bytes, 1),
            "bytes": self.bytes,
            "bytes_per_token": self.bytes / max(self.tokens, 1),
        }


class BitsPerDimension(DocumentMetric):
    """Mean NLL in bits of the sub-pixel targets; the EOS after each image is left out."""

    def __init__(self):
        self.nll = 0.0
        self.dimensions = 0

    def add(self, tokens, nll, correct) -> None:
        subpixels = tokens != EOS_ID
        self.nll += float(np.sum(nll[subpixels], dtype=np.float64))
        self.dimensions += int(subpixels.sum())

    def result(self) -> dict[str, Any]:
        return {"bits_per_dim": self.nll / math.log(2) / max(self.dimensions, 1), "dimensions": self.dimensions}


class CopyAccuracy(DocumentMetric):
    """Exact match on the mirrored half of copy-task documents, under teacher forcing."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.correct_tokens = 0
        self.tokens = 0
        self.correct_sequences = 0
        self.sequences = 0
        self.nll = 0.0

    def add(self, tokens, nll, correct) -> None:
        mirrored = self.tokenizer.mirrored_half(tokens)
        hits = correct[mirrored]
        self.correct_tokens += int(hits.sum())
        self.tokens += len(hits)
        self.correct_sequences += int(hits.size > 0 and bool(hits.all()))
        self.sequences += 1
        self.nll += float(np.sum(nll[mirrored], dtype=np.float64))

    def result(self) -> dict[str, Any]:
        return {
            "copy_token_accuracy": self.correct_tokens / max(self.tokens, 1),
            "copy_sequence_accuracy": self.correct_sequences / max(self.sequences, 1),
            "copy_nll": self.nll / max(self.tokens, 1),
            "copy_tokens": self.tokens,
            "copy_sequences": self.sequences,
        }


def metrics_for(tokenizer: Tokenizer | None) -> list[DocumentMetric]:
    """Return the document metrics of the tokenizer's modality; none for music or other data."""
    modality = getattr(tokenizer, "modality", None)
    if modality == "text":
        return [BitsPerByte(tokenizer)]
    if modality == "image":
        return [BitsPerDimension()]
    if modality == "copy":
        return [CopyAccuracy(tokenizer)]
    return []


class DocumentScores:
    """Collects per-target scores until a document is complete, then feeds it to `metrics`.

    Strided evaluation visits a document's windows in order, so only the documents whose
    windows share a batch are open at once.
    """

    def __init__(self, source, metrics: list[DocumentMetric]):
        self.source = source
        self.metrics = metrics
        self._open: dict[int, dict[str, Any]] = {}

    def add(self, documents: np.ndarray, positions: np.ndarray, nll: np.ndarray, correct: np.ndarray) -> None:
        """Record scores of targets; positions count from 1, the document's first token."""
        for document in np.unique(documents):
            selected = documents == document
            entry = self._open.get(int(document))
            if entry is None:
                tokens = np.asarray(self.source[int(document)]["tokens"])
                entry = {
                    "tokens": tokens,
                    "nll": np.zeros(len(tokens), np.float64),
                    "correct": np.zeros(len(tokens), bool),
                    "remaining": len(tokens),
                }
                self._open[int(document)] = entry
            indices = positions[selected] - 1
            entry["nll"][indices] = nll[selected]
            entry["correct"][indices] = correct[selected]
            entry["remaining"] -= int(selected.sum())
            if entry["remaining"] == 0:
                for metric in self.metrics:
                    metric.add(entry["tokens"], entry["nll"], entry["correct"])
                del self._open[int(document)]

    def result(self) -> dict[str, Any]:
        """Return every metric's values; raise ValueError if a document was not scored completely."""
        if self._open:
            raise ValueError(f"documents {sorted(self._open)} were not scored completely")
        values: dict[str, Any] = {}
        for metric in self.metrics:
            values.update(metric.result())
        return values
