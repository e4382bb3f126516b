"""Encode a folder of source files, or another input, into a TFDS token dataset (`pact encode dataset`).

On disk, for a dataset `name` under `data_dir`:

    <data_dir>/<name>/1.0.0/                the published TFDS dataset (array_record)
        dataset_info.json, features.json    TFDS's description; its presence marks completion
        metadata.json                       tokenizer spec, input folder, counts, skipped files
        source_files.json                   every input file with its split, size and mtime
        <name>-<split>.array_record-*       the examples
    <data_dir>/<name>.encode-cache/         per-file results of an unfinished run (see
                                            `pact.encode_cache`); deleted once published

The run has three steps: encode the files that are not cached yet in worker processes, write
the TFDS dataset from the cache into a staging folder, then move it into place with a
rename. A tokenizer that learns its vocabulary is trained on the train split first (see
`pact.tokenizer_training`). A dataset folder that exists is therefore always complete, and a run that is killed
resumes from the cache when it is started again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import json
import logging
import multiprocessing
import os
import re
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

import pact
from pact.dataset_inputs import SPLITS, InputListing, SourceFile
from pact.dataset_sources import CopyTaskSettings, is_folder_input, list_inputs
from pact.encode_cache import EncodeCache, FileResult, describe_differences, encode_into_cache, init_worker
from pact.encodings import EOS_ID, Tokenizer, get_tokenizer
from pact.errors import ConfigError, DatasetError, TokenizerMismatchError, WriteError, no_room_cause

logger = logging.getLogger(__name__)

# Version of the token dataset format. Bump it when the features or their meaning change.
DATASET_VERSION = "1.0.0"
METADATA_FILE = "metadata.json"
SOURCE_FILES_FILE = "source_files.json"
DATASET_INFO_FILE = "dataset_info.json"

# Upper limit of --workers, which catches typos such as 2000. Each worker is a separate
# Python process with its own tokenizer.
MAX_WORKERS = 256

_DATASET_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class SplitCounts:
    """Examples and tokens of one split; tokens include each example's EOS."""

    files: int
    tokens: int


@dataclass(frozen=True)
class SkippedFile:
    """A source file that is not in the dataset, and why."""

    source: str
    split: str
    reason: str


@dataclass(frozen=True)
class EncodeSummary:
    """Result of `encode_dataset`: where the dataset is, its counts and its skipped files."""

    path: Path
    """The dataset's version folder, as `open_dataset` and `tfds.builder_from_directory` take it."""

    name: str
    tokenizer_spec: dict[str, Any]
    splits: dict[str, SplitCounts]
    """Counts of the splits in the dataset; a split without files is left out."""

    skipped: list[SkippedFile]
    reused: bool
    """True when a complete dataset with the same tokenizer and input already existed."""

    files_encoded: int
    """Files the tokenizer read in this run."""

    files_from_cache: int
    """Results taken from the cache of an interrupted run, skipped files included."""


def dataset_path(data_dir: str | os.PathLike, name: str) -> Path:
    """Return the version folder of dataset `name` under `data_dir`."""
    return Path(data_dir) / name / DATASET_VERSION


def cache_path(data_dir: str | os.PathLike, name: str) -> Path:
    """Return the folder that keeps per-file results while dataset `name` is being encoded."""
    return Path(data_dir) / f"{name}.encode-cache"


def default_dataset_name(input_path: str | os.PathLike) -> str:
    """Derive a dataset name from the input folder's name ("pg19-mini" -> "pg19_mini").

    Other inputs use their whole name: "tfds:imagenet_resized/64x64" ->
    "tfds_imagenet_resized_64x64", "synthetic:copy" -> "synthetic_copy".
    """
    if not is_folder_input(input_path):
        return _to_dataset_name(os.fspath(input_path))
    return _to_dataset_name(Path(input_path).resolve().name)


def _to_dataset_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    if not name:
        return "dataset"
    if not name[0].isalpha():
        return f"dataset_{name}"
    return name


def validate_dataset_name(name: str) -> str:
    """Return `name` if TFDS can load a dataset by it; raise `ConfigError` otherwise.

    A valid name is snake_case: a lower-case letter, then lower-case letters, digits and
    underscores. It must not be in the TFDS catalog, because `tfds.data_source(name)` would
    load the catalog's builder instead of the files.
    """
    if not _DATASET_NAME.fullmatch(name):
        suggestion = _to_dataset_name(name)
        raise ConfigError(
            f"invalid dataset name {name!r}: use a lower-case letter followed by lower-case "
            f"letters, digits and underscores, for example {suggestion!r}"
        )

    import tensorflow_datasets as tfds

    try:
        tfds.builder_cls(name)
    except tfds.core.DatasetNotFoundError:
        return name
    raise ConfigError(
        f"dataset name {name!r} belongs to a dataset in the TFDS catalog, so "
        f"tfds.data_source({name!r}) would load the catalog's builder instead. "
        f"Choose another name, such as {name + '_pact'!r}"
    )


def default_workers() -> int:
    """Return the number of CPUs this process may run on, at most MAX_WORKERS."""
    if hasattr(os, "sched_getaffinity"):
        cpus = len(os.sched_getaffinity(0))
    else:
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS))


def validate_workers(workers: int) -> int:
    """Return `workers` if it is a usable number of worker processes; raise `ConfigError` otherwise."""
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(
            f"invalid number of workers {workers!r}: expected 1 to {MAX_WORKERS} worker processes"
        )
    return workers


def encode_dataset(
    input_path: str | os.PathLike,
    data_dir: str | os.PathLike,
    name: str | None = None,
    tokenizer: str | Tokenizer = "performance",
    workers: int | None = None,
    *,
    strict: bool = False,
    overwrite: bool = False,
    show_progress: bool = True,
    tfds_data_dir: str | os.PathLike | None = None,
    copy_task: CopyTaskSettings | None = None,
) -> EncodeSummary:
    """Encode every source file under `input_path` into the TFDS dataset `data_dir/name`.

    The input layouts and the split rule are described in `pact.dataset_inputs`. Each file
    becomes one example (see `pact.tfds_builder`). `input_path` may also be "tfds:NAME", a
    TFDS dataset prepared under `tfds_data_dir`, or "synthetic:copy" with `copy_task`
    settings (see `pact.dataset_sources`). `tokenizer` is a registered name or an
    instance. An untrained tokenizer (SentencePiece) is trained on the train split first.
    `name` defaults to one derived from the input, `workers` to the CPU count.
    `show_progress` draws a Rich progress bar on stderr.

    A file that the tokenizer rejects with a `PactError` is skipped and listed in the
    summary, unless `strict`, which raises `DatasetError` at the first one. Any other
    exception is a bug and propagates, with the file named. A complete dataset made from the
    same input with the same tokenizer is reused. One made from another input or with
    another tokenizer raises `DatasetError` or `TokenizerMismatchError` naming the
    difference, unless `overwrite`, which builds a new one and replaces it at the end.
    KeyboardInterrupt stops the run after the files in progress are cached, and the next
    run resumes from there.
    """
    if isinstance(tokenizer, str):
        tokenizer = get_tokenizer(tokenizer)
    name = validate_dataset_name(name if name is not None else default_dataset_name(input_path))
    workers = default_workers() if workers is None else validate_workers(workers)
    data_dir = Path(data_dir).resolve()
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(f"data dir {data_dir} is a file, not a folder. Pass a folder for the dataset")

    listing = list_inputs(
        input_path, tokenizer, exclude=data_dir, tfds_data_dir=tfds_data_dir, copy_task=copy_task
    )
    input_description = _describe_input(listing)
    target = dataset_path(data_dir, name)
    _remove_replaced_leftovers(target.parent)

    training = None
    if tokenizer.needs_training:
        from pact.tokenizer_training import prepare_tokenizer

        saved = [] if overwrite else _saved_training(target, cache_path(data_dir, name))
        tokenizer, training = prepare_tokenizer(tokenizer, listing, saved)

    if not overwrite and (target / DATASET_INFO_FILE).exists():
        metadata = _check_existing(target, tokenizer, listing)
        logger.info("reusing the complete dataset %s", target)
        return _summary_from_metadata(target, name, metadata)

    cache_description = {"tokenizer": tokenizer.spec(), "input": input_description}
    if training is not None:
        cache_description["tokenizer_training"] = training
    cache = EncodeCache.open(cache_path(data_dir, name), cache_description, discard_existing=overwrite)
    try:
        results, files_from_cache = _encode_files(listing, tokenizer, cache, workers, strict, show_progress)
        metadata = _build_metadata(listing, tokenizer, input_description, results, training)
        if not metadata["splits"]:
            first = metadata["skipped"][0]
            raise DatasetError(
                f"none of the {len(metadata['skipped'])} files of {listing.label} could be encoded "
                f"with tokenizer {tokenizer.name!r}, for example {first['source']}: {first['reason']}"
            )

        staged = _write_tfds_dataset(listing, name, cache, results, metadata, show_progress)
        _publish(staged, target)
        cache.delete()
    finally:
        cache.close()

    summary = _summary_from_metadata(target, name, metadata, reused=False)
    return dataclasses.replace(
        summary, files_encoded=len(results) - files_from_cache, files_from_cache=files_from_cache
    )


# Step 1: encode the files that are not cached yet.


def _encode_files(
    listing: InputListing,
    tokenizer: Tokenizer,
    cache: EncodeCache,
    workers: int,
    strict: bool,
    show_progress: bool,
) -> tuple[dict[str, FileResult], int]:
    """Return the result of every listed file by source, and how many came from the cache."""
    if strict and listing.missing:
        missing = listing.missing[0]
        _raise_strict(listing.root / missing.source, missing.reason)

    results: dict[str, FileResult] = {}
    pending: list[SourceFile] = []
    for file in listing.files:
        cached = cache.lookup(file)
        if cached is None:
            pending.append(file)
        else:
            results[file.source] = cached
            if strict and cached.skip_reason is not None:
                _raise_strict(file.location, cached.skip_reason)
    files_from_cache = len(results)
    if files_from_cache:
        logger.info("resuming: %d of %d files are cached in %s", files_from_cache, len(listing.files), cache.directory)

    if pending:
        with _progress(show_progress) as progress:
            task = progress.add_task(
                "Encoding", total=len(listing.files), completed=files_from_cache, unit="files"
            )
            for result in _run_workers(
                pending, tokenizer, listing.reader, cache, min(workers, len(pending)), strict
            ):
                results[result.source] = result
                if result.skip_reason is not None:
                    logger.info("skipped %s: %s", result.source, result.skip_reason)
                progress.advance(task)
    return results, files_from_cache


def _run_workers(
    pending: list[SourceFile], tokenizer: Tokenizer, reader: Any, cache: EncodeCache, workers: int, strict: bool
):
    """Yield the results of `pending` in completion order, encoded by `workers` processes."""
    # spawn, not fork: the caller may have started threads (JAX, TFDS), which fork would copy
    # in an unknown state.
    executor = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=init_worker,
        initargs=(tokenizer, cache.files_directory, os.getpid(), reader),
    )
    try:
        futures = {executor.submit(encode_into_cache, file): file for file in pending}
        for future in as_completed(futures):
            file = futures[future]
            try:
                result = future.result()
            except BrokenProcessPool:
                raise DatasetError(
                    "an encoding worker process exited unexpectedly (killed, or out of memory) "
                    f"while encoding {file.location} or another file. Finished files are cached in "
                    f"{cache.directory}. Run the command again to resume, with fewer --workers "
                    "if memory is short"
                ) from None
            except Exception as error:
                cause = no_room_cause(error)
                if cause is not None:
                    raise WriteError(
                        f"could not write the encoded {file.location} into {cache.directory}: "
                        f"{cause.strerror}. Files encoded before it are kept there: free space and "
                        "run the same command again to resume"
                    ) from error
                raise RuntimeError(
                    f"unexpected {type(error).__name__} while encoding {file.location} with tokenizer "
                    f"{tokenizer.name!r}, which is a bug in the tokenizer or in pact"
                ) from error

            if strict and result.skip_reason is not None:
                _raise_strict(file.location, result.skip_reason)
            yield result
    except BaseException:
        # Files in progress finish and are cached, and files not started yet are cancelled.
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    executor.shutdown(wait=True)


def _raise_strict(location: Path | str, reason: str) -> None:
    raise DatasetError(
        f"cannot encode {location}: {reason}. Fix or remove the file, or run without --strict "
        "to skip it"
    )


@contextlib.contextmanager
def _progress(enabled: bool):
    """Yield a Rich progress display on stderr with items/s and ETA; it draws nothing unless `enabled`."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TaskProgressColumn(),
        _RateColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )
    with progress:
        yield progress


class _RateColumn(ProgressColumn):
    """Items per second, in the task's `unit` field."""

    def render(self, task):
        speed = task.finished_speed or task.speed
        if not speed:
            return Text(f"? {task.fields['unit']}/s")
        return Text(f"{speed:,.1f} {task.fields['unit']}/s")


# Step 2: write the TFDS dataset from the cache.


def _describe_input(listing: InputListing) -> dict[str, Any]:
    if listing.description is not None:
        return {"layout": listing.layout, **listing.description}
    return {"folder": str(listing.root), "layout": listing.layout, "index": listing.index_file}


def _saved_training(target: Path, cache_folder: Path) -> list[tuple[Any, Any]]:
    """Return the (tokenizer spec, training record) pairs that earlier runs saved, the complete dataset's first."""
    saved = []
    for path, key in ((target / METADATA_FILE, None), (cache_folder / "cache.json", "description")):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if key is not None:
            document = document.get(key) if isinstance(document, dict) else None
        if isinstance(document, dict) and "tokenizer_training" in document:
            saved.append((document.get("tokenizer"), document["tokenizer_training"]))
    return saved


def _build_metadata(
    listing: InputListing,
    tokenizer: Tokenizer,
    input_description: dict[str, Any],
    results: dict[str, FileResult],
    training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the dataset's metadata.json: tokenizer spec, input, per-split counts and skipped files.

    `training` is the record of the examples a trained tokenizer learned from, if any.
    """
    splits: dict[str, dict[str, int]] = {}
    skipped = [
        {"source": missing.source, "split": missing.split, "reason": missing.reason}
        for missing in listing.missing
    ]
    for file in listing.files:
        result = results[file.source]
        if result.skip_reason is not None:
            skipped.append({"source": file.source, "split": file.split, "reason": result.skip_reason})
            continue
        counts = splits.setdefault(file.split, {"files": 0, "tokens": 0})
        counts["files"] += 1
        counts["tokens"] += result.num_tokens + 1  # + EOS

    skipped.sort(key=lambda item: item["source"])
    metadata = {
        "pact_version": pact.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tokenizer": tokenizer.spec(),
        "input": input_description,
        "splits": {split: splits[split] for split in SPLITS if split in splits},
        "skipped": skipped,
    }
    if training is not None:
        metadata["tokenizer_training"] = training
    return metadata


def _write_tfds_dataset(
    listing: InputListing,
    name: str,
    cache: EncodeCache,
    results: dict[str, FileResult],
    metadata: dict[str, Any],
    show_progress: bool,
) -> Path:
    """Write the dataset into the cache's staging folder and return its version folder."""
    import tensorflow_datasets as tfds

    from pact.tfds_builder import TokenDatasetBuilder

    # TFDS draws its own tqdm bars for every split; the Rich bar below replaces them. This
    # switches them off for the whole process.
    tfds.display_progress_bar(False)
    shutil.rmtree(cache.staging_directory, ignore_errors=True)
    encoded_by_split = {
        split: [file for file in listing.files if file.split == split and results[file.source].skip_reason is None]
        for split in metadata["splits"]
    }

    with _progress(show_progress) as progress:
        task = progress.add_task(
            "Writing", total=sum(len(files) for files in encoded_by_split.values()), unit="examples"
        )

        def examples_of(files: list[SourceFile]):
            def generate():
                for file in files:
                    tokens = np.append(cache.load_tokens(file), np.int32(EOS_ID)).astype(np.int32)
                    progress.advance(task)
                    yield file.source, {"tokens": tokens, "source": file.source, "num_tokens": tokens.shape[0]}

            return generate

        builder = TokenDatasetBuilder(
            name=name,
            examples={split: examples_of(files) for split, files in encoded_by_split.items()},
            metadata=metadata,
            description=f"Examples of {listing.label} encoded with tokenizer {metadata['tokenizer']['name']!r}.",
            data_dir=cache.staging_directory,
        )
        # TFDS prints "Downloading and preparing dataset ..." on stdout, which is for results.
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                builder.download_and_prepare(
                    file_format="array_record", download_dir=cache.staging_directory / "downloads"
                )
        except Exception as error:
            cause = no_room_cause(error)
            if cause is None:
                raise
            # The half-written split only takes space; the encoded files stay in the cache.
            shutil.rmtree(cache.staging_directory / name, ignore_errors=True)
            raise WriteError(
                f"could not write dataset {name} into {cache.staging_directory}: {cause.strerror}. "
                f"The encoded files are kept in {cache.directory}: free space and run the same "
                "command again to finish without encoding them again"
            ) from error

    staged = cache.staging_directory / name / DATASET_VERSION
    source_files = {
        "files": [[file.source, file.split, file.size, file.mtime_ns] for file in listing.files],
        "missing": [[missing.source, missing.split] for missing in listing.missing],
    }
    (staged / SOURCE_FILES_FILE).write_text(json.dumps(source_files), encoding="utf-8")
    return staged


# Step 3: publish.


def _publish(staged: Path, target: Path) -> None:
    """Move the finished dataset to `target`, replacing an older one there.

    Each rename is atomic, so `target` is at every moment either absent, the old dataset or
    the new one. Between the two renames of a replacement there is no dataset. A crash at
    that point leaves the old dataset in a hidden ".replaced" folder, which the next run
    deletes.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    replaced = None
    if target.exists():
        replaced = target.with_name(f".{target.name}.replaced-{os.getpid()}")
        target.rename(replaced)
    staged.rename(target)
    if replaced is not None:
        shutil.rmtree(replaced)


def _remove_replaced_leftovers(dataset_folder: Path) -> None:
    for leftover in dataset_folder.glob(".*.replaced-*"):
        shutil.rmtree(leftover, ignore_errors=True)


# Reuse of a complete dataset.


def _check_existing(target: Path, tokenizer: Tokenizer, listing: InputListing) -> dict[str, Any]:
    """Return the metadata of the dataset at `target` if it was made from `listing` with `tokenizer`.

    Raises `TokenizerMismatchError` or `DatasetError` that lists every difference.
    """
    metadata = read_metadata(target)
    differences = describe_differences(
        {"tokenizer": metadata["tokenizer"]}, {"tokenizer": tokenizer.spec()}
    )
    tokenizer_differs = bool(differences)
    differences += describe_differences(
        {"input": metadata.get("input")}, {"input": _describe_input(listing)}
    )
    differences += _describe_file_changes(target, listing)
    if not differences:
        return metadata

    message = (
        f"dataset {target} exists but was made differently ({'; '.join(differences)}). "
        "Pass --overwrite to replace it, or choose another --name"
    )
    if tokenizer_differs:
        raise TokenizerMismatchError(message)
    raise DatasetError(message)


def _describe_file_changes(target: Path, listing: InputListing) -> list[str]:
    try:
        stored = json.loads((target / SOURCE_FILES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DatasetError(
            f"failed to read {target / SOURCE_FILES_FILE}: {error}. Pass --overwrite to rebuild the dataset"
        ) from None

    stored_files = {entry[0]: tuple(entry[1:]) for entry in stored["files"]}
    current_files = {file.source: (file.split, file.size, file.mtime_ns) for file in listing.files}
    added = sorted(set(current_files) - set(stored_files))
    removed = sorted(set(stored_files) - set(current_files))
    changed = sorted(
        source for source in set(stored_files) & set(current_files) if stored_files[source] != current_files[source]
    )

    changes = []
    for label, sources in (("added", added), ("removed", removed), ("changed", changed)):
        if sources:
            examples = ", ".join(sources[:3]) + (", ..." if len(sources) > 3 else "")
            noun = "file" if len(sources) == 1 else "files"
            changes.append(f"{len(sources)} input {noun} {label} since ({examples})")
    return changes


def read_metadata(version_folder: Path) -> dict[str, Any]:
    """Read the metadata.json of a pact dataset; raise `DatasetError` if it is not one."""
    path = version_folder / METADATA_FILE
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        metadata = None
    except (OSError, ValueError) as error:
        raise DatasetError(f"failed to read {path}: {error}") from None
    if not isinstance(metadata, dict) or "tokenizer" not in metadata or "splits" not in metadata:
        raise DatasetError(
            f"{version_folder} has no tokenizer spec in {METADATA_FILE}, so `pact encode dataset` "
            "did not make it. Encode the source files with `pact encode dataset`"
        )
    return metadata


def _summary_from_metadata(target: Path, name: str, metadata: dict[str, Any], reused: bool = True) -> EncodeSummary:
    return EncodeSummary(
        path=target,
        name=name,
        tokenizer_spec=metadata["tokenizer"],
        splits={split: SplitCounts(**counts) for split, counts in metadata["splits"].items()},
        skipped=[SkippedFile(**item) for item in metadata["skipped"]],
        reused=reused,
        files_encoded=0,
        files_from_cache=0,
    )

