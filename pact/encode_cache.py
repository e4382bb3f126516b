"""Per-file encoding results kept on disk, so an interrupted dataset encoding can resume.

The cache is a folder beside the dataset (`<data_dir>/<name>.encode-cache/`):

    cache.json            tokenizer spec and input folder the entries belong to
    lock                  held with flock by the process that is encoding
    files/<key>.npy       ids of one source file (int32, without EOS)
    files/<key>.skip.json {"source": ..., "reason": ...} for a file the tokenizer rejected
    staging/              where TFDS writes the dataset before it is published

`key` is a digest of the file's source path, size and modification time, so a file that
changed since it was cached is encoded again. Each entry is written to a temporary name and
renamed into place, so a crash or SIGKILL leaves either a whole entry or none.

Worker processes write the entries themselves, so only counts and reasons travel back to
the main process.

NOTE: the lock uses fcntl.flock, so this module runs on Linux and macOS but not Windows.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pact.dataset_inputs import SourceFile
from pact.dataset_sources import read_item
from pact.encodings.base import Tokenizer
from pact.errors import DatasetError, PactError

CACHE_FORMAT = 1


@dataclass(frozen=True)
class FileResult:
    """Outcome of encoding one source file: a token count or the reason it was skipped."""

    source: str
    num_tokens: int | None
    """Number of ids, without EOS; None when the file was skipped."""

    skip_reason: str | None


class EncodeCache:
    """The cache folder of one dataset; create it with `EncodeCache.open`."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.files_directory = directory / "files"
        self.staging_directory = directory / "staging"
        self._lock_file = None

    @classmethod
    def open(cls, directory: Path, description: dict[str, Any], discard_existing: bool = False) -> EncodeCache:
        """Lock the cache folder and check that its entries were made for `description`.

        `description` contains the tokenizer spec and the input folder. A new folder is
        created for it, and `discard_existing` empties an existing one first. An existing
        folder made for another description raises `DatasetError`, which says what differs.
        Another process encoding into the same folder also raises `DatasetError`.
        """
        cache = cls(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cache._lock()

        manifest_path = directory / "cache.json"
        if discard_existing:
            manifest_path.unlink(missing_ok=True)
            shutil.rmtree(cache.files_directory, ignore_errors=True)
            shutil.rmtree(cache.staging_directory, ignore_errors=True)

        if manifest_path.exists():
            stored = _read_json(manifest_path)
            differences = describe_differences(stored.get("description", {}), description)
            if stored.get("format") != CACHE_FORMAT:
                differences.append(f"cache format {stored.get('format')!r}, expected {CACHE_FORMAT}")
            if differences:
                cache.close()
                raise DatasetError(
                    f"{directory} contains an unfinished encoding with other settings "
                    f"({'; '.join(differences)}). Run it again with those settings to finish "
                    "it, or pass --overwrite to discard it"
                )
        else:
            _write_json_atomically(manifest_path, {"format": CACHE_FORMAT, "description": description})

        cache.files_directory.mkdir(exist_ok=True)
        cache._remove_temporary_files()
        return cache

    def _lock(self) -> None:
        self._lock_file = open(self.directory / "lock", "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise DatasetError(
                f"another process is encoding into {self.directory}. Wait for it to finish, "
                "or choose another --name"
            ) from None

    def close(self) -> None:
        """Release the lock; the entries stay for the next run."""
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def delete(self) -> None:
        """Delete the whole cache folder, once the dataset it served is published.

        The lock is held until the folder is gone, so no other run starts using it meanwhile.
        """
        shutil.rmtree(self.directory, ignore_errors=True)
        self.close()

    def _remove_temporary_files(self) -> None:
        # Leftovers of entries that a killed process was writing.
        for path in self.files_directory.glob("*.tmp*"):
            path.unlink(missing_ok=True)

    def lookup(self, file: SourceFile) -> FileResult | None:
        """Return the cached result for `file`, or None when it has to be encoded."""
        key = entry_key(file)

        tokens_path = self.files_directory / f"{key}.npy"
        if tokens_path.exists():
            try:
                tokens = np.load(tokens_path, mmap_mode="r")
            except (OSError, ValueError):
                # A damaged entry, for example after a power loss: encode the file again.
                tokens_path.unlink(missing_ok=True)
                return None
            return FileResult(file.source, num_tokens=int(tokens.shape[0]), skip_reason=None)

        skip_path = self.files_directory / f"{key}.skip.json"
        if skip_path.exists():
            try:
                reason = _read_json(skip_path)["reason"]
            except (OSError, ValueError, KeyError):
                skip_path.unlink(missing_ok=True)
                return None
            return FileResult(file.source, num_tokens=None, skip_reason=reason)

        return None

    def load_tokens(self, file: SourceFile) -> np.ndarray:
        """Load the cached ids of `file` (int32, without EOS)."""
        return np.load(self.files_directory / f"{entry_key(file)}.npy")


def entry_key(file: SourceFile) -> str:
    """Digest of the file's source path, size and modification time, as a file name."""
    identity = f"{file.source}\0{file.size}\0{file.mtime_ns}"
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]


def describe_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Describe each top-level key whose value differs, as "key: <stored> before, <current> now"."""
    differences = []
    for key in sorted(set(stored) | set(current)):
        if stored.get(key) != current.get(key):
            differences.append(f"{key}: {_short(stored.get(key))} before, {_short(current.get(key))} now")
    return differences


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def _read_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as file:
        return json.load(file)


def _write_json_atomically(path: Path, value: Any) -> None:
    temporary = path.with_name(f"{path.name}.tmp{os.getpid()}")
    temporary.write_text(json.dumps(value, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(temporary, path)


# Worker processes.

_worker_tokenizer: Tokenizer | None = None
_worker_files_directory: Path | None = None
_worker_reader: Any = None


def init_worker(tokenizer: Tokenizer, files_directory: Path, parent_pid: int, reader: Any = None) -> None:
    """Set up one worker process of the encoding pool.

    `reader` reads the examples that are not files (see `pact.dataset_sources`).

    Workers ignore SIGINT so that Ctrl-C reaches only the main process, which stops the
    pool. They exit on their own within a second when the main process dies, for example
    from SIGKILL, because nothing else would stop them.
    """
    global _worker_tokenizer, _worker_files_directory, _worker_reader
    _worker_tokenizer = tokenizer
    _worker_files_directory = files_directory
    _worker_reader = reader
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()


def _exit_when_orphaned(parent_pid: int) -> None:
    # A dead parent's children are re-parented, so the parent id changes.
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)


def encode_into_cache(file: SourceFile) -> FileResult:
    """Encode one file in a worker process and store the ids or the skip reason in the cache.

    A `PactError` from the tokenizer skips the file with its reason. Any other exception is
    a bug and propagates. The ids must be a 1-D integer array in [2, vocab_size), so without
    PAD or EOS. Anything else is a tokenizer bug and raises ValueError.
    """
    tokenizer = _worker_tokenizer
    key = entry_key(file)

    try:
        if file.path is not None:
            ids = tokenizer.encode_file(file.path)
        else:
            ids = tokenizer.encode(read_item(file, tokenizer, _worker_reader))
    except PactError as error:
        reason = getattr(error, "reason", None) or str(error)
        _write_json_atomically(
            _worker_files_directory / f"{key}.skip.json", {"source": file.source, "reason": reason}
        )
        return FileResult(file.source, num_tokens=None, skip_reason=reason)

    ids = np.asarray(ids)
    check_ids(ids, tokenizer, file.location)
    ids = ids.astype(np.int32, copy=False)

    tokens_path = _worker_files_directory / f"{key}.npy"
    temporary = tokens_path.with_name(f"{key}.tmp{os.getpid()}.npy")
    # Serialise in memory and write with Python's file API: numpy's own file writes report a
    # full device as a short write with no errno, which the caller could not tell from a bug.
    buffer = io.BytesIO()
    np.save(buffer, ids)
    try:
        temporary.write_bytes(buffer.getbuffer())
    except OSError:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, tokens_path)
    return FileResult(file.source, num_tokens=int(ids.shape[0]), skip_reason=None)


def check_ids(ids: np.ndarray, tokenizer: Tokenizer, path: Path | str) -> None:
    """Raise ValueError unless `ids` is what `Tokenizer.encode` promises."""
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            f"tokenizer {tokenizer.name!r} returned {ids.dtype} ids of shape {ids.shape} for "
            f"{path}; encode must return a 1-D integer array"
        )
    if ids.size and (ids.min() < tokenizer.num_reserved_ids or ids.max() >= tokenizer.vocab_size):
        raise ValueError(
            f"tokenizer {tokenizer.name!r} returned ids from {ids.min()} to {ids.max()} for "
            f"{path}; encode must return ids in [{tokenizer.num_reserved_ids}, "
            f"{tokenizer.vocab_size}), without PAD or EOS"
        )
