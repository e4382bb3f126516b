"""Writing token datasets with `encode_dataset` and reading them back, on real files."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pact.datasets import encode_dataset, open_dataset
from pact.encodings import EOS_ID, get_tokenizer
from pact.errors import ConfigError, DatasetError, TokenizerMismatchError

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Tokenizers under test. "performance" runs once pact.encodings.performance exists.
TOKENIZERS = ["bytes", "performance"]


@pytest.fixture
def tokenizer(tokenizer_name):
    if tokenizer_name == "performance" and importlib.util.find_spec("pact.encodings.performance") is None:
        pytest.skip("the performance tokenizer is not in this checkout yet")
    return get_tokenizer(tokenizer_name)


@pytest.fixture
def plain_folder(tokenizer_name, tmp_path, pg19_mini, piano_performances):
    """A plain folder of real files for `tokenizer_name`, plus one unreadable file.

    The unreadable file is a real file of the other kind under the tokenizer's suffix: a
    MIDI file named .txt for "bytes", a book named .mid for "performance".
    """
    folder = tmp_path / "input"
    (folder / "nested" / "deeper").mkdir(parents=True)
    midi_files = sorted(piano_performances.glob("*.mid"))
    books = sorted(pg19_mini.glob("*/*.txt"))
    if tokenizer_name == "bytes":
        good, suffix, broken_target = books, ".txt", midi_files[0]
    else:
        good, suffix, broken_target = midi_files[:6], ".mid", books[0]

    for index, path in enumerate(good):
        subfolder = folder if index % 2 else folder / "nested" / "deeper"
        (subfolder / f"file_{index}{suffix}").symlink_to(path)
    (folder / "nested" / f"broken{suffix}").symlink_to(broken_target)
    return folder


def _examples(dataset):
    """All examples of every split, as {source: (split, example)}."""
    found = {}
    for split in dataset.splits:
        source = dataset.source(split)
        for index in range(len(source)):
            example = source[index]
            assert example["source"] not in found, f"{example['source']} appears twice"
            found[example["source"]] = (split, example)
    return found


def test_pg19_encodes_and_reads_back(pg19_mini, tmp_path):
    tokenizer = get_tokenizer("bytes")
    summary = encode_dataset(pg19_mini, tmp_path, tokenizer="bytes", workers=2, show_progress=False)

    assert summary.name == "pg19_mini"
    assert summary.path == tmp_path.resolve() / "pg19_mini" / "1.0.0"
    assert summary.reused is False
    assert summary.files_encoded == 5
    assert summary.skipped == []
    assert {split: counts.files for split, counts in summary.splits.items()} == {
        "train": 3,
        "validation": 1,
        "test": 1,
    }

    dataset = open_dataset(tmp_path, "pg19_mini")
    assert dataset.path == summary.path
    assert dataset.splits == ("train", "validation", "test")
    assert dataset.tokenizer_spec == tokenizer.spec()
    assert dataset.num_examples == {"train": 3, "validation": 1, "test": 1}

    examples = _examples(dataset)
    assert sorted(examples) == ["test/84.txt", "train/1342.txt", "train/2701.txt", "train/37106.txt", "validation/2641.txt"]
    tokens_per_split = {}
    for source, (split, example) in examples.items():
        expected = np.append(tokenizer.encode_file(pg19_mini / source), EOS_ID)
        assert example["tokens"].dtype == np.int32
        np.testing.assert_array_equal(example["tokens"], expected)
        assert example["num_tokens"] == len(expected)
        assert split == source.split("/")[0]
        tokens_per_split[split] = tokens_per_split.get(split, 0) + len(expected)
    assert dataset.num_tokens == tokens_per_split
    assert {split: counts.tokens for split, counts in summary.splits.items()} == tokens_per_split

    # The cache of per-file results is gone once the dataset is published.
    assert not (tmp_path / "pg19_mini.encode-cache").exists()


def test_tfds_reads_without_tensorflow(pg19_mini, tmp_path):
    encode_dataset(pg19_mini, tmp_path, name="books", tokenizer="bytes", workers=1, show_progress=False)
    program = textwrap.dedent(
        f"""
        import json, sys
        import tensorflow_datasets as tfds

        sources = tfds.data_source("books", data_dir={str(tmp_path)!r}, download=False)
        train = sources["train"]
        example = train[0]
        builder = tfds.builder_from_directory({str(tmp_path / "books" / "1.0.0")!r})
        print(json.dumps({{
            "splits": sorted(sources),
            "train_length": len(train),
            "source": example["source"].decode(),
            "dtype": str(example["tokens"].dtype),
            "last_id": int(example["tokens"][-1]),
            "tokenizer": builder.info.metadata["tokenizer"]["name"],
            "tensorflow_imported": "tensorflow" in sys.modules,
        }}))
        """
    )
    completed = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["splits"] == ["test", "train", "validation"]
    assert result["train_length"] == 3
    assert result["source"] == "train/1342.txt"
    assert result["dtype"] == "int32"
    assert result["last_id"] == EOS_ID
    assert result["tokenizer"] == "bytes"
    assert result["tensorflow_imported"] is False


def test_split_source_works_with_grain(pg19_mini, tmp_path):
    import grain

    encode_dataset(pg19_mini, tmp_path, name="books", tokenizer="bytes", workers=1, show_progress=False)
    source = open_dataset(tmp_path / "books").source("train")

    restored = pickle.loads(pickle.dumps(source))
    assert len(restored) == 3
    assert restored[2]["source"] == "train/37106.txt"
    assert restored[-1]["source"] == "train/37106.txt"
    with pytest.raises(IndexError):
        restored[3]

    lengths = grain.MapDataset.source(source).map(lambda example: example["num_tokens"])
    assert list(lengths) == [source[index]["num_tokens"] for index in range(3)]


@pytest.mark.parametrize("tokenizer_name", TOKENIZERS)
def test_plain_folder_skips_unreadable_file(tokenizer, plain_folder, tmp_path):
    data_dir = tmp_path / "data"

    summary = encode_dataset(plain_folder, data_dir, tokenizer=tokenizer, workers=2, show_progress=False)

    broken = next(plain_folder.glob("nested/broken.*"))
    assert [skipped.source for skipped in summary.skipped] == [f"nested/{broken.name}"]
    assert summary.skipped[0].reason
    listed = sorted(path for path in plain_folder.rglob("file_*"))
    assert sum(counts.files for counts in summary.splits.values()) == len(listed)

    dataset = open_dataset(summary.path)
    assert [skipped.source for skipped in dataset.skipped] == [f"nested/{broken.name}"]
    examples = _examples(dataset)
    assert sorted(examples) == sorted(path.relative_to(plain_folder).as_posix() for path in listed)
    for source, (_, example) in examples.items():
        expected = np.append(tokenizer.encode_file(plain_folder / source), EOS_ID)
        np.testing.assert_array_equal(example["tokens"], expected)


@pytest.mark.parametrize("tokenizer_name", ["bytes"])
def test_strict_fails_on_first_unreadable_file(plain_folder, tmp_path):
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetError, match=r"cannot encode .*broken\.txt: contains a NUL byte.*--strict"):
        encode_dataset(plain_folder, data_dir, tokenizer="bytes", workers=1, strict=True, show_progress=False)
    assert not (data_dir / "input").exists()


def _write_maestro_index(folder: Path, rows: list[dict[str, str]]) -> None:
    columns = ["canonical_composer", "canonical_title", "split", "year", "midi_filename", "audio_filename", "duration"]
    with (folder / "maestro-v3.0.0.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({column: row.get(column, "") for column in columns})


def test_index_splits_override_folders(pg19_mini, tmp_path):
    # A MAESTRO-style index may list any files; here it lists the books under other splits
    # than their folders, plus one file that does not exist.
    folder = tmp_path / "indexed"
    folder.mkdir()
    (folder / "books").symlink_to(pg19_mini)
    wanted = {
        "books/train/1342.txt": "test",
        "books/train/2701.txt": "train",
        "books/test/84.txt": "train",
        "books/validation/2641.txt": "validation",
    }
    rows = [
        {"canonical_composer": "Austen, Jane", "canonical_title": f'Book "{index}", vol. 1', "split": split,
         "year": "1813", "midi_filename": source}
        for index, (source, split) in enumerate(wanted.items())
    ]
    rows.append({"canonical_composer": "Nobody", "canonical_title": "Lost", "split": "train", "year": "1900",
                 "midi_filename": "books/train/missing.txt"})
    _write_maestro_index(folder, rows)

    summary = encode_dataset(folder, tmp_path / "data", tokenizer="bytes", workers=2, show_progress=False)
    assert [(item.source, item.reason) for item in summary.skipped] == [
        ("books/train/missing.txt", "listed in maestro-v3.0.0.csv but not found")
    ]
    dataset = open_dataset(summary.path)
    assert {source: split for source, (split, _) in _examples(dataset).items()} == wanted
    assert dataset.metadata["input"]["layout"] == "maestro"

    with pytest.raises(DatasetError, match=r"cannot encode .*missing\.txt: listed in maestro-v3.0.0.csv"):
        encode_dataset(folder, tmp_path / "strict", tokenizer="bytes", strict=True, show_progress=False)


def _maestro_subset(maestro_root: Path, folder: Path, per_split: int) -> dict[str, str]:
    """A MAESTRO folder with the first `per_split` files of each split; returns {file: split}."""
    with (maestro_root / "maestro-v3.0.0.csv").open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    counts = Counter()
    chosen = []
    for row in rows:
        if counts[row["split"]] < per_split:
            counts[row["split"]] += 1
            chosen.append(row)
            (folder / row["midi_filename"]).parent.mkdir(parents=True, exist_ok=True)
            (folder / row["midi_filename"]).symlink_to(maestro_root / row["midi_filename"])
    _write_maestro_index(folder, chosen)
    return {row["midi_filename"]: row["split"] for row in chosen}


@pytest.mark.parametrize("tokenizer_name", ["performance"])
def test_maestro_subset_encodes(tokenizer, maestro_root, tmp_path):
    wanted = _maestro_subset(maestro_root, tmp_path / "maestro", per_split=2)
    summary = encode_dataset(tmp_path / "maestro", tmp_path / "data", tokenizer=tokenizer, workers=2, show_progress=False)
    assert summary.skipped == []

    examples = _examples(open_dataset(summary.path))
    assert {source: split for source, (split, _) in examples.items()} == wanted
    for source, (_, example) in examples.items():
        expected = np.append(tokenizer.encode_file(tmp_path / "maestro" / source), EOS_ID)
        np.testing.assert_array_equal(example["tokens"], expected)


@pytest.mark.slow
@pytest.mark.parametrize("tokenizer_name", ["performance"])
def test_full_maestro_encodes(tokenizer, maestro_root, tmp_path):
    summary = encode_dataset(maestro_root, tmp_path, tokenizer=tokenizer, show_progress=False)
    assert summary.skipped == []
    assert {split: counts.files for split, counts in summary.splits.items()} == {
        "train": 295,
        "validation": 25,
        "test": 33,
    }


def test_rerun_reuses_complete_dataset(pg19_mini, tmp_path):
    first = encode_dataset(pg19_mini, tmp_path, tokenizer="bytes", workers=1, show_progress=False)
    record_file = next(first.path.glob("*-train.array_record-*"))
    written_at = record_file.stat().st_mtime_ns

    second = encode_dataset(pg19_mini, tmp_path, tokenizer="bytes", workers=1, show_progress=False)
    assert second.reused is True
    assert second.files_encoded == 0
    assert second.splits == first.splits
    assert record_file.stat().st_mtime_ns == written_at

    rebuilt = encode_dataset(pg19_mini, tmp_path, tokenizer="bytes", workers=1, overwrite=True, show_progress=False)
    assert rebuilt.reused is False
    assert rebuilt.files_encoded == 5
    assert rebuilt.splits == first.splits
    assert list((tmp_path / "pg19_mini").iterdir()) == [first.path]


def test_other_tokenizer_is_rejected(pg19_mini, tmp_path):
    encode_dataset(pg19_mini, tmp_path, tokenizer="bytes", workers=1, show_progress=False)
    strict = get_tokenizer("bytes", fallback_encoding=None)
    with pytest.raises(TokenizerMismatchError, match=r"fallback_encoding.*cp1252.*null.*--overwrite"):
        encode_dataset(pg19_mini, tmp_path, tokenizer=strict, workers=1, show_progress=False)


def test_other_input_is_rejected(pg19_mini, tmp_path):
    copy = tmp_path / "pg19_mini"
    for book in pg19_mini.glob("*/*.txt"):
        (copy / book.parent.name).mkdir(parents=True, exist_ok=True)
        (copy / book.parent.name / book.name).symlink_to(book)
    data_dir = tmp_path / "data"
    encode_dataset(pg19_mini, data_dir, tokenizer="bytes", workers=1, show_progress=False)

    with pytest.raises(DatasetError, match=r"made differently \(input: .*pg19-mini.* before, .*tmp.* now"):
        encode_dataset(copy, data_dir, tokenizer="bytes", workers=1, show_progress=False)

    # A file added to the original input is reported by name.
    extra_input = tmp_path / "grown"
    (extra_input / "train").mkdir(parents=True)
    for book in pg19_mini.glob("train/*.txt"):
        (extra_input / "train" / book.name).symlink_to(book)
    encode_dataset(extra_input, data_dir, tokenizer="bytes", workers=1, show_progress=False)
    (extra_input / "train" / "84.txt").symlink_to(pg19_mini / "test" / "84.txt")
    with pytest.raises(DatasetError, match=r"1 input file added since \(train/84.txt\)"):
        encode_dataset(extra_input, data_dir, tokenizer="bytes", workers=1, show_progress=False)


def test_invalid_options_are_rejected(pg19_mini, tmp_path):
    with pytest.raises(ConfigError, match="invalid number of workers 0: expected 1 to 256"):
        encode_dataset(pg19_mini, tmp_path, tokenizer="bytes", workers=0)
    with pytest.raises(ConfigError, match="invalid dataset name 'PG19-mini'.*'pg19_mini'"):
        encode_dataset(pg19_mini, tmp_path, name="PG19-mini", tokenizer="bytes")
    with pytest.raises(ConfigError, match="'mnist' belongs to a dataset in the TFDS catalog"):
        encode_dataset(pg19_mini, tmp_path, name="mnist", tokenizer="bytes")
    assert list(tmp_path.iterdir()) == []


def test_open_missing_dataset_says_how_to_create_it(tmp_path):
    with pytest.raises(DatasetError, match=r"no dataset found at .*absent\. Create it with `pact encode dataset INPUT"):
        open_dataset(tmp_path, "absent")


def test_open_unknown_split_lists_splits(pg19_mini, tmp_path):
    encode_dataset(pg19_mini, tmp_path, tokenizer="bytes", workers=1, show_progress=False)
    with pytest.raises(DatasetError, match="has no split 'dev'. Its splits are train, validation, test"):
        open_dataset(tmp_path / "pg19_mini").source("dev")


# An encoding run in a subprocess whose tokenizer blocks on the file gate.txt until the file
# `release` exists: the real bytes tokenizer with a pause, so the test can kill the run at a
# known point. Its spec equals the bytes tokenizer's, so a rerun with "bytes" resumes the cache.
# The script restores Python's Ctrl-C handler: a shell without job control starts background
# commands with SIGINT ignored, and children inherit that, so the test's SIGINT would be lost.
_GATED_RUN = """
import signal, sys, time
from pathlib import Path
from pact.datasets import encode_dataset
from pact.encodings.bytes import BytesTokenizer

signal.signal(signal.SIGINT, signal.default_int_handler)

class GatedBytesTokenizer(BytesTokenizer):
    def encode_file(self, path):
        if Path(path).name == "gate.txt":
            while not Path(sys.argv[3]).exists():
                time.sleep(0.02)
        return super().encode_file(path)

if __name__ == "__main__":
    encode_dataset(sys.argv[1], sys.argv[2], name="gated", tokenizer=GatedBytesTokenizer(), workers=2, show_progress=False)
"""


def _gated_input(pg19_mini: Path, folder: Path, count: int) -> list[str]:
    """A plain folder of `count` slices of a real book, the first one named gate.txt."""
    folder.mkdir()
    text = (pg19_mini / "train" / "1342.txt").read_bytes()
    names = ["gate.txt"] + [f"part_{index:03d}.txt" for index in range(1, count)]
    for index, name in enumerate(names):
        (folder / name).write_bytes(text[index * 4000 : (index + 1) * 4000])
    return names


def _start_gated_run(tmp_path: Path, input_folder: Path, data_dir: Path) -> subprocess.Popen:
    script = tmp_path / "gated_run.py"
    script.write_text(_GATED_RUN, encoding="utf-8")
    return subprocess.Popen(
        [sys.executable, str(script), str(input_folder), str(data_dir), str(tmp_path / "release")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_cached_files(cache_files: Path, count: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cache_files.is_dir() and len(list(cache_files.glob("*.npy"))) >= count:
            return
        if process.poll() is not None:
            raise AssertionError(f"the encoding run exited early: {process.communicate()}")
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} files were cached in {timeout} s")


def _child_pids(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry.name))
    return children


def _pid_exists(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds worker processes through /proc")
def test_killed_run_resumes_with_each_file_once(pg19_mini, tmp_path):
    names = _gated_input(pg19_mini, tmp_path / "input", count=30)
    data_dir = tmp_path / "data"
    process = _start_gated_run(tmp_path, tmp_path / "input", data_dir)

    # All files but gate.txt get cached; then SIGKILL the main process only.
    _wait_for_cached_files(data_dir / "gated.encode-cache" / "files", len(names) - 1, process)
    workers = _child_pids(process.pid)
    assert workers, "the run has no worker processes"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)

    # Orphaned workers notice that the main process is gone and exit.
    deadline = time.monotonic() + 10
    while any(_pid_exists(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_pid_exists(pid) for pid in workers), "worker processes outlived the killed run"

    assert not (data_dir / "gated" / "1.0.0").exists()
    with pytest.raises(DatasetError, match=r"encoding was interrupted.*Finish it with `pact encode dataset .*--tokenizer bytes`"):
        open_dataset(data_dir, "gated")

    # The unfinished cache belongs to the bytes tokenizer with its default options.
    with pytest.raises(DatasetError, match="unfinished encoding with other settings"):
        encode_dataset(
            tmp_path / "input",
            data_dir,
            name="gated",
            tokenizer=get_tokenizer("bytes", fallback_encoding=None),
            workers=1,
            show_progress=False,
        )

    summary = encode_dataset(tmp_path / "input", data_dir, name="gated", tokenizer="bytes", workers=2, show_progress=False)
    assert summary.files_from_cache == len(names) - 1
    assert summary.files_encoded == 1
    examples = _examples(open_dataset(summary.path))
    assert sorted(examples) == sorted(names)


def test_interrupted_run_caches_files_in_progress(pg19_mini, tmp_path):
    names = _gated_input(pg19_mini, tmp_path / "input", count=12)
    data_dir = tmp_path / "data"
    process = _start_gated_run(tmp_path, tmp_path / "input", data_dir)
    _wait_for_cached_files(data_dir / "gated.encode-cache" / "files", len(names) - 1, process)

    # Ctrl-C: the run stops taking new files and waits for gate.txt, which is in progress.
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert process.poll() is None, "the run exited before the file in progress finished"
    (tmp_path / "release").touch()
    _, stderr = process.communicate(timeout=30)
    assert process.returncode != 0
    assert "KeyboardInterrupt" in stderr
    assert not (data_dir / "gated" / "1.0.0").exists()

    summary = encode_dataset(tmp_path / "input", data_dir, name="gated", tokenizer="bytes", workers=1, show_progress=False)
    assert summary.files_from_cache == len(names)
    assert summary.files_encoded == 0
    assert sorted(_examples(open_dataset(summary.path))) == sorted(names)
