"""Input layouts, the MAESTRO index and split assignment, on the real data folders."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from collections import Counter

import pytest

from pact.dataset_inputs import (
    LAYOUT_MAESTRO,
    LAYOUT_PLAIN,
    LAYOUT_SPLIT_FOLDERS,
    list_input_files,
    read_maestro_index,
    split_for_source,
)
from pact.errors import DatasetError

MIDI_SUFFIXES = (".mid", ".midi")


def test_maestro_csv_and_json_agree(maestro_root):
    from_csv = read_maestro_index(maestro_root / "maestro-v3.0.0.csv")
    from_json = read_maestro_index(maestro_root / "maestro-v3.0.0.json")
    assert len(from_csv) == 353
    assert from_csv == from_json


def test_maestro_index_split_counts(maestro_root):
    entries = read_maestro_index(maestro_root / "maestro-v3.0.0.json")
    assert Counter(entry.split for entry in entries) == {"train": 295, "validation": 25, "test": 33}


def test_maestro_listing_uses_index_splits(maestro_root):
    listing = list_input_files(maestro_root, MIDI_SUFFIXES)
    assert listing.layout == LAYOUT_MAESTRO
    assert listing.index_file == "maestro-v3.0.0.csv"
    assert listing.missing == []
    assert Counter(file.split for file in listing.files) == {"train": 295, "validation": 25, "test": 33}

    first = listing.files[0]
    assert first.path == maestro_root.resolve() / first.source
    assert first.size == first.path.stat().st_size


def _copy_index_with_rows(maestro_root, tmp_path, edit_rows):
    """Write a MAESTRO CSV and json into tmp_path whose rows point at the real files."""
    with (maestro_root / "maestro-v3.0.0.csv").open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    rows = edit_rows(rows)
    for row in rows:
        target = tmp_path / row["midi_filename"]
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() and (maestro_root / row["midi_filename"]).exists():
            target.symlink_to(maestro_root / row["midi_filename"])

    with (tmp_path / "maestro-v3.0.0.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    columns = {column: {str(i): row[column] for i, row in enumerate(rows)} for column in rows[0]}
    (tmp_path / "maestro-v3.0.0.json").write_text(json.dumps(columns), encoding="utf-8")
    return rows


def test_maestro_titles_with_commas_and_quotes(maestro_root, tmp_path):
    titles = ['Sonata in A Major, D. 959', 'Etude Op. 10 No. 3 "Tristesse"', 'Prelude, "Raindrop", Op. 28']

    def retitle(rows):
        rows = rows[:3]
        for row, title in zip(rows, titles):
            row["canonical_title"] = title
        return rows

    _copy_index_with_rows(maestro_root, tmp_path, retitle)
    from_csv = read_maestro_index(tmp_path / "maestro-v3.0.0.csv")
    from_json = read_maestro_index(tmp_path / "maestro-v3.0.0.json")
    assert [entry.canonical_title for entry in from_csv] == titles
    assert from_csv == from_json


def test_maestro_missing_file_is_reported(maestro_root, tmp_path):
    def add_missing(rows):
        rows = rows[:4]
        rows[3] = dict(rows[3], midi_filename="2004/not-there.midi")
        return rows

    _copy_index_with_rows(maestro_root, tmp_path, add_missing)
    listing = list_input_files(tmp_path, MIDI_SUFFIXES)
    assert len(listing.files) == 3
    assert [missing.source for missing in listing.missing] == ["2004/not-there.midi"]
    assert "listed in maestro-v3.0.0.csv but not found" in listing.missing[0].reason


def test_maestro_unknown_split_is_rejected(maestro_root, tmp_path):
    def bad_split(rows):
        rows = rows[:2]
        rows[1]["split"] = "dev"
        return rows

    _copy_index_with_rows(maestro_root, tmp_path, bad_split)
    with pytest.raises(DatasetError, match=r"maestro-v3.0.0.csv, row 2: split 'dev' is not one of"):
        list_input_files(tmp_path, MIDI_SUFFIXES)


def test_maestro_path_outside_folder_is_rejected(maestro_root, tmp_path):
    def escape(rows):
        rows = rows[:1]
        rows[0]["midi_filename"] = "../elsewhere.midi"
        return rows

    _copy_index_with_rows(maestro_root, tmp_path, escape)
    with pytest.raises(DatasetError, match="must be a path inside the dataset folder"):
        list_input_files(tmp_path, MIDI_SUFFIXES)


def test_maestro_with_text_tokenizer_is_rejected(maestro_root):
    with pytest.raises(DatasetError, match=r"lists 353 \.midi files, but the tokenizer reads only \.txt files"):
        list_input_files(maestro_root, (".txt",))


def test_split_folders_layout(pg19_mini):
    listing = list_input_files(pg19_mini, (".txt",))
    assert listing.layout == LAYOUT_SPLIT_FOLDERS
    assert [(file.source, file.split) for file in listing.files] == [
        ("test/84.txt", "test"),
        ("train/1342.txt", "train"),
        ("train/2701.txt", "train"),
        ("train/37106.txt", "train"),
        ("validation/2641.txt", "validation"),
    ]


def test_plain_folder_split_counts(piano_performances):
    listing = list_input_files(piano_performances, MIDI_SUFFIXES)
    assert listing.layout == LAYOUT_PLAIN
    assert len(listing.files) == 344
    # Pinned: a change in the split rule would move files between splits of existing datasets.
    assert Counter(file.split for file in listing.files) == {"train": 308, "validation": 21, "test": 15}


def test_split_rule_pinned_values():
    assert split_for_source("song_000.mid") == "train"
    assert split_for_source("song_003.mid") == "test"
    assert split_for_source("song_053.mid") == "validation"
    assert split_for_source("train/1342.txt") == "train"


def test_split_rule_ignores_hash_seed():
    sources = [f"folder {i}/piece_{i}.mid" for i in range(300)]
    expected = [split_for_source(source) for source in sources]
    program = (
        "import json, sys\n"
        "from pact.dataset_inputs import split_for_source\n"
        "print(json.dumps([split_for_source(s) for s in json.loads(sys.stdin.read())]))\n"
    )
    for seed in ("0", "12345"):
        completed = subprocess.run(
            [sys.executable, "-c", program],
            input=json.dumps(sources),
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert json.loads(completed.stdout) == expected


def test_split_rule_ignores_other_files(piano_performances, tmp_path):
    # Build two folders that share some files, created in different orders.
    all_files = sorted(piano_performances.glob("*.mid"))[:60]
    shared = all_files[:30]
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, files in ((first, all_files), (second, shared)):
        folder.mkdir()
        shuffled = list(files)
        random.Random(len(files)).shuffle(shuffled)
        for path in shuffled:
            (folder / path.name).symlink_to(path)

    splits_first = {file.source: file.split for file in list_input_files(first, MIDI_SUFFIXES).files}
    splits_second = {file.source: file.split for file in list_input_files(second, MIDI_SUFFIXES).files}
    assert splits_second == {source: splits_first[source] for source in splits_second}


def test_plain_folder_is_searched_recursively(pg19_mini, tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "a" / "b" / "Book.TXT").symlink_to(pg19_mini / "test" / "84.txt")
    (tmp_path / "top.txt").symlink_to(pg19_mini / "train" / "1342.txt")
    (tmp_path / ".hidden" / "skip.txt").symlink_to(pg19_mini / "train" / "2701.txt")
    (tmp_path / "notes.md").symlink_to(pg19_mini / "metadata.csv")

    listing = list_input_files(tmp_path, (".txt",))
    assert listing.layout == LAYOUT_PLAIN
    assert [file.source for file in listing.files] == ["a/b/Book.TXT", "top.txt"]


def test_excluded_output_folder_is_not_listed(pg19_mini, tmp_path):
    (tmp_path / "book.txt").symlink_to(pg19_mini / "test" / "84.txt")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "leftover.txt").symlink_to(pg19_mini / "train" / "1342.txt")

    listing = list_input_files(tmp_path, (".txt",), exclude=tmp_path / "out")
    assert [file.source for file in listing.files] == ["book.txt"]


def test_folder_without_matching_files_names_what_it_found(piano_performances):
    with pytest.raises(DatasetError, match=r"no \.txt files found in .*It contains 344 \.mid files\."):
        list_input_files(piano_performances, (".txt",))


def test_input_that_is_not_a_folder_is_rejected(pg19_mini):
    with pytest.raises(DatasetError, match="84.txt is not a folder"):
        list_input_files(pg19_mini / "test" / "84.txt", (".txt",))
