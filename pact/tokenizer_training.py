"""Train a dataset's tokenizer on its training split, or reuse the one an earlier run trained.

`encode_dataset` trains a tokenizer whose `needs_training` is true (SentencePiece) before it
encodes anything. The trained spec is saved in the dataset's metadata.json and in the encode
cache, next to a training record:

    {"split": "train", "examples": 3, "sha256": "<digest of the training examples>"}

The digest covers each training example's source, size and modification time. Running the
same command again, to resume an interrupted encoding or on a complete dataset, reuses the
saved spec when the training settings and the digest are unchanged. It does not train
again, so cached results stay valid and the dataset is not rejected as made differently.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from pact.dataset_inputs import InputListing
from pact.dataset_sources import read_item
from pact.encodings import Tokenizer, tokenizer_from_spec
from pact.errors import DatasetError, PactError

logger = logging.getLogger(__name__)

TRAINING_SPLIT = "train"


def training_record(listing: InputListing) -> dict[str, Any]:
    """Describe the examples a tokenizer is trained on: split, count and digest."""
    digest = hashlib.sha256()
    count = 0
    for file in listing.files:
        if file.split == TRAINING_SPLIT:
            digest.update(f"{file.source}\0{file.size}\0{file.mtime_ns}\n".encode("utf-8"))
            count += 1
    return {"split": TRAINING_SPLIT, "examples": count, "sha256": digest.hexdigest()}


def has_same_settings(untrained: Tokenizer, spec: dict[str, Any]) -> bool:
    """Whether `spec` was trained from `untrained`'s name, version and training settings."""
    if spec.get("name") != untrained.name or spec.get("version") != untrained.version:
        return False
    stored = spec.get("options")
    if not isinstance(stored, dict):
        return False
    return all(
        stored.get(key) == value
        for key, value in untrained.options().items()
        if key not in untrained.trained_options
    )


def prepare_tokenizer(
    untrained: Tokenizer,
    listing: InputListing,
    saved: Sequence[tuple[Any, Any]] = (),
) -> tuple[Tokenizer, dict[str, Any]]:
    """Return a trained tokenizer for `listing` and its training record.

    `saved` contains (spec, training record) pairs from an earlier run, newest first. The first
    one with the same settings and training examples is rebuilt instead of training again.
    Raises `DatasetError` when the input has no training examples.
    """
    record = training_record(listing)
    for spec, saved_record in saved:
        if isinstance(spec, dict) and saved_record == record and has_same_settings(untrained, spec):
            logger.info("reusing the %s tokenizer trained by an earlier run", untrained.name)
            return tokenizer_from_spec(spec, source="the earlier run's metadata"), record

    if record["examples"] == 0:
        raise DatasetError(
            f"{listing.label} has no {TRAINING_SPLIT} split to train the {untrained.name} tokenizer on. "
            f"Add training files, or encode with a tokenizer that needs no training, such as bytes"
        )
    logger.info("training the %s tokenizer on %d %s examples", untrained.name, record["examples"], TRAINING_SPLIT)
    started = time.perf_counter()
    trained = untrained.train(_training_items(untrained, listing))
    logger.info("trained the %s tokenizer in %.1f s", untrained.name, time.perf_counter() - started)
    return trained, record


def _training_items(tokenizer: Tokenizer, listing: InputListing) -> Iterator[Any]:
    """Yield the readable items of the training split; the encoding step reports the others."""
    for file in listing.files:
        if file.split != TRAINING_SPLIT:
            continue
        try:
            yield read_item(file, tokenizer, listing.reader)
        except PactError as error:
            logger.info("not training on %s: %s", file.location, error)
