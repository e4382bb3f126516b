"""Musical statistics of MIDI sets and `pact eval samples`, on the hard cases and real performances."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pact.cli.main import app
from pact.encodings.midi import Notes, read_midi
from pact.errors import DatasetError
from pact.music_statistics import collect_statistics, piece_statistics, set_distances, wasserstein_distance

runner = CliRunner()

def _link(folder, paths):
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        (folder / path.name).symlink_to(path)
    return folder


def test_chord_statistics(bugcases):
    # C, E and G from 0 to 1 s at velocity 90.
    statistics = piece_statistics(read_midi(bugcases / "03_running_status.mid").notes)
    assert statistics.notes == 3
    assert statistics.note_density == pytest.approx(3.0)
    assert statistics.pitch_class_counts.tolist() == [1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0]
    assert statistics.velocities.tolist() == [90, 90, 90]
    assert statistics.inter_onset_intervals.size == 0
    assert statistics.polyphony == pytest.approx(3.0)


def test_sustained_notes_statistics(bugcases):
    # After the pedal: 60 0.0-1.0, 64 0.3-1.0, 67 1.2-1.5.
    statistics = piece_statistics(read_midi(bugcases / "08_sustain_basic.mid").notes)
    assert statistics.seconds == pytest.approx(1.5)
    assert statistics.note_density == pytest.approx(2.0)
    assert statistics.inter_onset_intervals == pytest.approx([0.3, 0.9])
    # 2.0 s of notes over 1.3 s in which something sounds.
    assert statistics.polyphony == pytest.approx(2.0 / 1.3)


def test_overlap_and_nested_intervals():
    notes = Notes.from_arrays(start=[0.0, 0.5, 0.6, 3.0], end=[2.0, 1.0, 2.5, 3.5], pitch=[60, 61, 62, 63],
                              velocity=[10, 20, 30, 40])
    statistics = piece_statistics(notes)
    # The union is [0, 2.5) and [3, 3.5): 3.0 s, and the notes last 2 + 0.5 + 1.9 + 0.5 = 4.9 s.
    assert statistics.polyphony == pytest.approx(4.9 / 3.0)
    assert statistics.inter_onset_intervals == pytest.approx([0.5, 0.1, 2.4])


def test_onsets_within_one_step_are_one_onset():
    notes = Notes.from_arrays(start=[1.000, 1.003, 1.5], end=[2.0, 2.0, 2.0], pitch=[60, 64, 67], velocity=[80] * 3)
    assert piece_statistics(notes).inter_onset_intervals == pytest.approx([0.5])


def test_zero_length_notes_have_no_polyphony():
    notes = Notes.from_arrays(start=[1.0, 1.0], end=[1.0, 1.0], pitch=[60, 64], velocity=[80, 80])
    statistics = piece_statistics(notes)
    assert statistics.note_density is None
    assert statistics.polyphony is None
    assert piece_statistics(Notes.empty()) is None


def test_set_lists_empty_and_unreadable_files(bugcases, tmp_path):
    folder = _link(tmp_path / "set", [bugcases / name for name in
                                      ("03_running_status.mid", "08_sustain_basic.mid", "31_header_no_tracks.mid")])
    (folder / "truncated.mid").write_bytes((bugcases / "03_running_status.mid").read_bytes()[:30])
    statistics = collect_statistics(folder)
    assert len(statistics.pieces) == 2
    assert statistics.empty_files == ["31_header_no_tracks.mid"]
    assert [name for name, _ in statistics.unreadable_files] == ["truncated.mid"]
    summary = statistics.summary()
    assert summary["notes"] == 6
    assert sum(summary["pitch_class_histogram"].values()) == pytest.approx(1.0, abs=1e-5)
    assert summary["pitch_class_histogram"]["C"] == pytest.approx(2 / 6)


def test_sets_without_notes_are_rejected(bugcases, tmp_path):
    with pytest.raises(DatasetError, match="is not a folder of MIDI files"):
        collect_statistics(tmp_path / "absent")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "notes.txt").write_text("no MIDI here")
    with pytest.raises(DatasetError, match="no MIDI files .* found in"):
        collect_statistics(tmp_path / "texts")
    empty = _link(tmp_path / "empty", [bugcases / "31_header_no_tracks.mid"])
    with pytest.raises(DatasetError, match=r"none of the 1 MIDI files .* has notes \(1 empty, 0 unreadable\)"):
        collect_statistics(empty)


def test_wasserstein_distance_known_answers():
    assert wasserstein_distance(np.array([0.0]), np.array([1.0])) == pytest.approx(1.0)
    values = np.array([0.0, 1.0, 5.0])
    assert wasserstein_distance(values, values + 2.5) == pytest.approx(2.5)
    # Half the mass moves from 0 to 3.
    assert wasserstein_distance(np.array([0.0, 0.0]), np.array([0.0, 3.0])) == pytest.approx(1.5)
    assert wasserstein_distance(np.array([1.0, 2.0, 3.0]), np.array([3.0, 1.0, 2.0])) == pytest.approx(0.0)
    assert wasserstein_distance(np.array([]), values) is None


def test_identical_sets_have_zero_distance(piano_performances, tmp_path):
    statistics = collect_statistics(_link(tmp_path / "set", sorted(piano_performances.glob("*.mid"))[:10]))
    distances = set_distances(statistics, statistics)
    assert all(value == pytest.approx(0.0, abs=1e-12) for value in distances.values()), distances


def test_piano_performances_are_closer_than_pop(maestro_root, piano_performances, shared_data):
    # Whole sets: pitch-class histograms of 40-file subsets depend on which keys they hold.
    reference = collect_statistics(maestro_root)
    piano = collect_statistics(piano_performances)
    pop = collect_statistics(shared_data / "pop909")

    to_piano = set_distances(piano, reference)
    to_pop = set_distances(pop, reference)
    for name in to_piano:
        assert to_piano[name] < to_pop[name], (name, to_piano[name], to_pop[name])
    # Pop arrangements are played louder and with sparser onsets than competition piano.
    assert pop.summary()["velocity_mean"] > reference.summary()["velocity_mean"] + 10
    assert pop.summary()["ioi_median"] > reference.summary()["ioi_median"]


def test_eval_samples_command(bugcases, shared_data, tmp_path):
    samples = _link(tmp_path / "samples", sorted((shared_data / "pop909").glob("*.mid"))[:6])
    (samples / "broken.mid").write_bytes(b"MThd")
    json_path, plot_path = tmp_path / "stats.json", tmp_path / "stats.png"
    result = runner.invoke(app, ["eval", "samples", str(samples), "--reference", str(shared_data / "pop909"),
                                 "--json", str(json_path), "--plot", str(plot_path)])
    assert result.exit_code == 0, result.output
    assert "pitch-class" in result.stdout
    assert "velocity mean" in result.stdout
    assert "Notice: skipped broken.mid in samples" in result.stderr

    values = json.loads(json_path.read_text())
    assert values["samples"]["pieces"] == 6
    assert values["reference"]["pieces"] == 24
    assert [item["file"] for item in values["samples"]["unreadable_files"]] == ["broken.mid"]
    assert set(values["distances"]) == {"pitch_class_distance", "velocity_distance", "ioi_distance",
                                        "note_density_distance", "polyphony_distance"}
    assert all(math.isfinite(value) and value >= 0 for value in values["distances"].values())
    with Image.open(plot_path) as image:
        assert image.format == "PNG"


def test_eval_samples_json_to_stdout(bugcases, tmp_path):
    folder = _link(tmp_path / "set", [bugcases / "03_running_status.mid", bugcases / "08_sustain_basic.mid"])
    result = runner.invoke(app, ["eval", "samples", str(folder), "--reference", str(folder), "--json", "-"])
    assert result.exit_code == 0, result.output
    values = json.loads(result.stdout)
    assert values["distances"]["pitch_class_distance"] == pytest.approx(0.0)
    assert np.isclose(values["samples"]["polyphony_mean"], (3.0 + 2.0 / 1.3) / 2)
