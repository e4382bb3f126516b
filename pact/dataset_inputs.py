"""Find the source files of a dataset and assign each one to a split.

Three input layouts are recognised, checked in this order:

1. MAESTRO: the folder contains a MAESTRO index, `maestro-v*.csv` or `maestro-v*.json`
   (the json is column-oriented: {column: {row number: value}}). Each row names a file
   (`midi_filename`, relative to the folder) and its split (`train`, `validation` or
   `test`). When both index files exist the CSV is used.
2. Split folders: the folder has a `train/`, `validation/` or `test/` subfolder, as PG-19
   and image folders do. Files in each are searched recursively.
3. Plain folder: every file with one of the tokenizer's suffixes, searched recursively, is
   assigned to a split by `split_for_source`.

In every layout a file is identified by its `source`: its path relative to the input folder,
with "/" separators. Hidden files and folders (names starting with ".") are ignored, and so
are symbolic links to folders, so a scan never loops.

Inputs that are not folders (TFDS datasets, the synthetic copy task) are listed by
`pact.dataset_sources` with the same types.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pact.errors import DatasetError

SPLITS = ("train", "validation", "test")

# Fractions of a plain folder's files assigned to validation and test. The rest go to train.
VALIDATION_FRACTION = 0.05
TEST_FRACTION = 0.05

LAYOUT_MAESTRO = "maestro"
LAYOUT_SPLIT_FOLDERS = "split_folders"
LAYOUT_PLAIN = "plain"

MAESTRO_COLUMNS = ("canonical_composer", "canonical_title", "split", "year", "midi_filename")


@dataclass(frozen=True)
class SourceFile:
    """One input item and the split it belongs to: a file, or an example of an input that is not a folder."""

    source: str
    """Path relative to the input folder, with "/" separators; "<split>/<index>" for an example."""

    path: Path | None
    """The file, or None for an example that `InputListing.reader` reads."""

    split: str
    size: int
    """Size in bytes when the folder was scanned."""

    mtime_ns: int
    """Modification time in nanoseconds since the epoch when the folder was scanned."""

    record: int | None = None
    """Index of the example in its split when `path` is None."""

    origin: str = ""
    """The input an example comes from, such as "tfds:pg19"; empty for a file."""

    @property
    def location(self) -> str:
        """Where the item is, for messages: the file path, or the input, split and index."""
        if self.path is not None:
            return str(self.path)
        return f"{self.origin} {self.split}[{self.record}]"


@dataclass(frozen=True)
class MissingFile:
    """A file that an index lists but that does not exist."""

    source: str
    split: str
    reason: str


@dataclass(frozen=True)
class InputListing:
    """The files of one input folder, or the examples of another input, sorted by source."""

    root: Path | None
    """The input folder; for a TFDS dataset its prepared folder, for a generated task None."""

    layout: str
    index_file: str | None
    """Name of the index the splits come from (MAESTRO layout only)."""

    files: list[SourceFile]
    missing: list[MissingFile]
    origin: str = ""
    """Name of an input that is not a folder, such as "tfds:pg19"."""

    description: dict[str, Any] | None = None
    """Identity of an input that is not a folder (name, version, settings), saved in the dataset's metadata."""

    reader: Any = None
    """Object whose `read(file)` returns the item of an example that has no path."""

    @property
    def label(self) -> str:
        """The input, for messages: its name or its folder."""
        return self.origin or str(self.root)


@dataclass(frozen=True)
class MaestroEntry:
    """One row of a MAESTRO index."""

    midi_filename: str
    split: str
    canonical_composer: str
    canonical_title: str
    year: int


def split_for_source(source: str) -> str:
    """Assign a file of a plain folder to a split from its relative path alone.

    The first 8 bytes of the SHA-256 digest of the UTF-8 `source`, read as a big-endian
    integer and divided by 2**64, give a number u in [0, 1): "test" if u < TEST_FRACTION,
    else "validation" if u < TEST_FRACTION + VALIDATION_FRACTION, else "train". The result
    depends on neither file order, machine nor Python's hash seed, and adding files never
    moves existing ones to another split.
    """
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    if position < TEST_FRACTION:
        return "test"
    if position < TEST_FRACTION + VALIDATION_FRACTION:
        return "validation"
    return "train"


def list_input_files(
    root: str | os.PathLike,
    file_suffixes: Collection[str],
    exclude: str | os.PathLike | None = None,
) -> InputListing:
    """Find the files of `root` in the first layout that matches it.

    `file_suffixes` are the tokenizer's lower-case suffixes; matching ignores case. Files
    under `exclude` (for example an output folder inside the input) are left out.
    Raises `DatasetError` when `root` is not a folder, an index is invalid or lists files
    of another kind, or no file matches.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise DatasetError(f"input {root} is not a folder. Pass the folder that contains the files")
    suffixes = tuple(suffix.lower() for suffix in file_suffixes)
    excluded = Path(exclude).resolve() if exclude is not None else None

    index_path = find_maestro_index(root)
    if index_path is not None:
        return _list_maestro(root, index_path, suffixes)

    split_folders = [root / split for split in SPLITS if (root / split).is_dir()]
    if split_folders:
        files = [
            _stat_file(root, path, split=folder.name)
            for folder in split_folders
            for path in _walk_files(folder, suffixes, excluded)
        ]
        layout = LAYOUT_SPLIT_FOLDERS
    else:
        files = []
        for path in _walk_files(root, suffixes, excluded):
            source = _source_of(root, path)
            files.append(_stat_file(root, path, split=split_for_source(source)))
        layout = LAYOUT_PLAIN

    if not files:
        searched = ", ".join(f"{folder.name}/" for folder in split_folders) or "the folder"
        raise DatasetError(
            f"no {'/'.join(suffixes)} files found in {root} (searched {searched} recursively)."
            f"{_other_suffixes_hint(root, excluded)} Choose a tokenizer that reads the files to encode"
        )
    files.sort(key=lambda file: file.source)
    return InputListing(root=root, layout=layout, index_file=None, files=files, missing=[])


def find_maestro_index(root: Path) -> Path | None:
    """Return the MAESTRO index of `root` (CSV preferred over json), or None if it has none."""
    for pattern in ("maestro-v*.csv", "maestro-v*.json"):
        candidates = sorted(root.glob(pattern))
        if len(candidates) > 1:
            names = ", ".join(path.name for path in candidates)
            raise DatasetError(
                f"{root} contains several MAESTRO indexes ({names}). Keep only the one to encode"
            )
        if candidates:
            return candidates[0]
    return None


def read_maestro_index(path: str | os.PathLike) -> list[MaestroEntry]:
    """Read a MAESTRO index, CSV or column-oriented json, in row order.

    Raises `DatasetError` naming the file and row for a missing column, an unknown split or
    a file name that leaves the dataset folder.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".csv":
            rows = _read_maestro_csv(path)
        else:
            rows = _read_maestro_json(path)
    except (OSError, UnicodeDecodeError, csv.Error, json.JSONDecodeError) as error:
        raise DatasetError(f"failed to read MAESTRO index {path}: {error}") from None

    entries = []
    for row_number, row in enumerate(rows, start=1):
        missing = [column for column in MAESTRO_COLUMNS if row.get(column) in (None, "")]
        if missing:
            raise DatasetError(f"{path}, row {row_number}: missing {', '.join(missing)}")

        split = str(row["split"])
        if split not in SPLITS:
            raise DatasetError(
                f"{path}, row {row_number}: split {split!r} is not one of {', '.join(SPLITS)}"
            )

        midi_filename = str(row["midi_filename"])
        parts = PurePosixPath(midi_filename).parts
        if PurePosixPath(midi_filename).is_absolute() or ".." in parts:
            raise DatasetError(
                f"{path}, row {row_number}: midi_filename {midi_filename!r} must be a path "
                "inside the dataset folder"
            )

        try:
            year = int(row["year"])
        except (TypeError, ValueError):
            raise DatasetError(f"{path}, row {row_number}: year {row['year']!r} is not a number") from None

        entries.append(
            MaestroEntry(
                midi_filename=midi_filename,
                split=split,
                canonical_composer=str(row["canonical_composer"]),
                canonical_title=str(row["canonical_title"]),
                year=year,
            )
        )
    return entries


def _read_maestro_csv(path: Path) -> list[dict]:
    # Titles contain commas and quotes, which the csv module parses as RFC 4180 fields.
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def _read_maestro_json(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as file:
        columns = json.load(file)
    if not isinstance(columns, dict) or not all(isinstance(values, dict) for values in columns.values()):
        raise DatasetError(
            f"MAESTRO index {path} is not column-oriented json ({{column: {{row: value}}}})"
        )

    row_keys = sorted({key for values in columns.values() for key in values}, key=_row_key_order)
    return [{column: values.get(key) for column, values in columns.items()} for key in row_keys]


def _row_key_order(key: str) -> tuple[int, int | str]:
    # MAESTRO's row keys are decimal strings ("0", "1", ..., "10"): sort them as numbers.
    return (0, int(key)) if key.isdigit() else (1, key)


def _list_maestro(root: Path, index_path: Path, suffixes: tuple[str, ...]) -> InputListing:
    entries = read_maestro_index(index_path)

    wrong_kind = Counter(
        PurePosixPath(entry.midi_filename).suffix.lower()
        for entry in entries
        if PurePosixPath(entry.midi_filename).suffix.lower() not in suffixes
    )
    if wrong_kind:
        listed = ", ".join(f"{count} {suffix or 'suffix-less'}" for suffix, count in wrong_kind.most_common())
        raise DatasetError(
            f"{index_path.name} lists {listed} files, but the tokenizer reads only "
            f"{'/'.join(suffixes)} files. Choose a tokenizer for them, such as --tokenizer performance"
        )

    files = []
    missing = []
    seen = set()
    for entry in entries:
        if entry.midi_filename in seen:
            raise DatasetError(f"{index_path} lists {entry.midi_filename} twice")
        seen.add(entry.midi_filename)

        path = root / entry.midi_filename
        if path.is_file():
            files.append(_stat_file(root, path, split=entry.split))
        else:
            missing.append(
                MissingFile(entry.midi_filename, entry.split, f"listed in {index_path.name} but not found")
            )

    files.sort(key=lambda file: file.source)
    return InputListing(
        root=root, layout=LAYOUT_MAESTRO, index_file=index_path.name, files=files, missing=missing
    )


def _walk_files(folder: Path, suffixes: tuple[str, ...], excluded: Path | None):
    """Yield the files under `folder` with one of `suffixes`, skipping hidden names."""
    for directory, subdirectories, filenames in os.walk(folder):
        directory_path = Path(directory)
        subdirectories[:] = [
            name
            for name in subdirectories
            if not name.startswith(".") and (excluded is None or directory_path / name != excluded)
        ]
        for filename in filenames:
            if not filename.startswith(".") and filename.lower().endswith(suffixes):
                yield directory_path / filename


def _stat_file(root: Path, path: Path, split: str) -> SourceFile:
    stat = path.stat()
    return SourceFile(
        source=_source_of(root, path), path=path, split=split, size=stat.st_size, mtime_ns=stat.st_mtime_ns
    )


def _source_of(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _other_suffixes_hint(root: Path, excluded: Path | None) -> str:
    counts = Counter()
    for directory, subdirectories, filenames in os.walk(root):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        if excluded is not None and Path(directory).resolve().is_relative_to(excluded):
            continue
        counts.update(Path(name).suffix.lower() for name in filenames if Path(name).suffix)
    if not counts:
        return ""
    found = ", ".join(f"{count} {suffix}" for suffix, count in counts.most_common(3))
    return f" It contains {found} files."
