"""Token datasets: write them with `encode_dataset`, read them with `open_dataset`.

A token dataset is a TFDS dataset in array_record format with one example per source file:

    tokens      int32 [num_tokens]  the tokenizer's ids followed by one EOS id
    source      str                 the file's path relative to the input folder
    num_tokens  int                 len(tokens)

Reading it needs tensorflow_datasets but not TensorFlow. For training:

    dataset = open_dataset("/data/maestro/1.0.0")     # or open_dataset("/data", "maestro")
    tokenizer = dataset.tokenizer()                   # checks the installed tokenizer matches
    train = grain.MapDataset.source(dataset.source("train"))
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pact.dataset_inputs import SPLITS
from pact.dataset_writer import (
    DATASET_INFO_FILE,
    EncodeSummary,
    SkippedFile,
    SplitCounts,
    cache_path,
    default_dataset_name,
    default_workers,
    encode_dataset,
    read_metadata,
    validate_dataset_name,
    validate_workers,
)
from pact.encodings import Tokenizer, tokenizer_from_spec
from pact.errors import DatasetError

__all__ = [
    "EncodeSummary",
    "EncodedDataset",
    "SkippedFile",
    "SplitCounts",
    "SplitSource",
    "cache_path",
    "default_dataset_name",
    "default_workers",
    "encode_dataset",
    "open_dataset",
    "validate_dataset_name",
    "validate_workers",
]

_VERSION_FOLDER = re.compile(r"\d+\.\d+\.\d+")


class SplitSource:
    """Random access to the examples of one split, in source-path order.

    `source[i]` returns {"tokens": int32 array, "source": str, "num_tokens": int}. It
    implements grain's RandomAccessDataSource (`len`, `[]`, a stable `repr`) and pickles
    without its open files, so grain worker processes can use it.
    """

    def __init__(self, dataset_path: Path, split: str, length: int):
        self.dataset_path = dataset_path
        self.split = split
        self._length = length
        self._records = None  # The TFDS data source, opened on first access in each process.

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -self._length <= index < self._length:
            raise IndexError(f"index {index} is out of range for split {self.split!r} of {self._length} examples")
        if self._records is None:
            self._records = _open_tfds_split(self.dataset_path, self.split)

        record = self._records[index % self._length]
        return {
            "tokens": np.asarray(record["tokens"], dtype=np.int32),
            "source": record["source"].decode("utf-8"),
            "num_tokens": int(record["num_tokens"]),
        }

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_records"] = None
        return state

    def __repr__(self) -> str:
        return f"SplitSource(dataset_path={str(self.dataset_path)!r}, split={self.split!r}, length={self._length})"


@dataclass(frozen=True)
class EncodedDataset:
    """A token dataset on disk; see `open_dataset`."""

    path: Path
    """The version folder, for example /data/maestro/1.0.0."""

    name: str
    tokenizer_spec: dict[str, Any]
    """`Tokenizer.spec()` of the tokenizer that made the dataset."""

    splits: tuple[str, ...]
    """Splits in the dataset, in the order train, validation, test; empty splits are absent."""

    num_examples: dict[str, int]
    num_tokens: dict[str, int]
    """Tokens per split, each example's EOS included."""

    skipped: list[SkippedFile]
    """Source files left out when the dataset was encoded, with the reasons."""

    metadata: dict[str, Any] = field(repr=False)
    """The whole metadata.json: the above plus the input folder, pact version and creation time."""

    def source(self, split: str) -> SplitSource:
        """Return random access to the examples of `split`; raise `DatasetError` if there is no such split."""
        if split not in self.splits:
            raise DatasetError(
                f"dataset {self.path} has no split {split!r}. Its splits are {', '.join(self.splits)}"
            )
        return SplitSource(self.path, split, self.num_examples[split])

    def tokenizer(self) -> Tokenizer:
        """Build the tokenizer that made the dataset.

        Raises `TokenizerMismatchError` when the installed tokenizer of that name has another
        version or vocabulary size.
        """
        return tokenizer_from_spec(self.tokenizer_spec, source=f"dataset {self.path}")


def open_dataset(path: str | os.PathLike, name: str | None = None) -> EncodedDataset:
    """Open a token dataset written by `encode_dataset`.

    `path` is the version folder (/data/maestro/1.0.0), the dataset folder (/data/maestro,
    whose newest complete version is used) or, with `name`, the data dir (/data). Raises
    `DatasetError` naming the path and the command that creates or finishes the dataset
    when none is there, or when its encoding was interrupted.
    """
    folder = Path(path) / name if name is not None else Path(path)
    version_folder = _find_version_folder(folder)
    metadata = read_metadata(version_folder)

    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(version_folder)
    if builder.info.file_format is None or builder.info.file_format.value != "array_record":
        raise DatasetError(
            f"{version_folder} is stored as {builder.info.file_format}, not array_record, so it "
            "cannot be read without TensorFlow. Encode the source files again with `pact encode dataset`"
        )

    split_infos = builder.info.splits
    splits = tuple(split for split in SPLITS if split in split_infos)
    return EncodedDataset(
        path=version_folder,
        name=builder.info.name,
        tokenizer_spec=metadata["tokenizer"],
        splits=splits,
        num_examples={split: split_infos[split].num_examples for split in splits},
        num_tokens={split: metadata["splits"][split]["tokens"] for split in splits},
        skipped=[SkippedFile(**item) for item in metadata.get("skipped", [])],
        metadata=metadata,
    )


def _find_version_folder(folder: Path) -> Path:
    if (folder / DATASET_INFO_FILE).is_file():
        return folder

    if folder.is_dir():
        versions = [
            child
            for child in folder.iterdir()
            if _VERSION_FOLDER.fullmatch(child.name) and (child / DATASET_INFO_FILE).is_file()
        ]
        if versions:
            return max(versions, key=lambda child: tuple(int(part) for part in child.name.split(".")))

    # Report the dataset by data dir and name, whichever form the caller passed.
    dataset_folder = folder.parent if _VERSION_FOLDER.fullmatch(folder.name) else folder
    data_dir, name = dataset_folder.parent, dataset_folder.name
    unfinished = cache_path(data_dir, name)
    if (unfinished / "cache.json").is_file():
        raise DatasetError(
            f"no complete dataset at {folder}: its encoding was interrupted, and the finished "
            f"files are cached in {unfinished}. Finish it with "
            f"`{_resume_command(unfinished, data_dir, name)}`"
        )
    raise DatasetError(
        f"no dataset found at {folder}. Create it with "
        f"`pact encode dataset INPUT --data-dir {data_dir} --name {name}`"
    )


def _resume_command(unfinished: Path, data_dir: Path, name: str) -> str:
    """Build the `pact encode dataset` command that resumes the encoding cached in `unfinished`."""
    try:
        description = json.loads((unfinished / "cache.json").read_text(encoding="utf-8"))["description"]
        input_folder = description["input"]["folder"]
        tokenizer_name = description["tokenizer"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"pact encode dataset INPUT --data-dir {data_dir} --name {name}"
    return f"pact encode dataset {input_folder} --data-dir {data_dir} --name {name} --tokenizer {tokenizer_name}"


def _open_tfds_split(dataset_path: Path, split: str):
    import tensorflow_datasets as tfds

    return tfds.builder_from_directory(dataset_path).as_data_source(split=split)
