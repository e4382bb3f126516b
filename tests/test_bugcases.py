"""The hard MIDI cases: every file gives its expected tokens, notes or error.

Where several results are acceptable, the one pact produces is pinned here:
* same-pitch overlaps pair first in, first out (both notes keep their own durations);
* zero-length notes are kept and last one step;
* a pedal never released ends the held notes at the last note or pedal event, as
  Magenta's `apply_sustain_control_changes` does (not at End-of-Track);
* a note never closed ends at the End-of-Track of its track and is reported.
"""

from __future__ import annotations

import json

import pytest

from pact.encodings.midi import read_midi
from pact.encodings.performance import PerformanceTokenizer
from pact.errors import MidiReadError

EXPECTED_TOKENS = {
    "02_noteon_vel0_as_noteoff.mid": "VELOCITY_20 NOTE_ON_60 TIME_SHIFT_50 NOTE_OFF_60 VELOCITY_25 NOTE_ON_64 "
    "TIME_SHIFT_50 NOTE_OFF_64 VELOCITY_32 NOTE_ON_67 TIME_SHIFT_100 NOTE_OFF_67",
    "03_running_status.mid": "VELOCITY_23 NOTE_ON_60 NOTE_ON_64 NOTE_ON_67 TIME_SHIFT_100 NOTE_OFF_60 NOTE_OFF_64 "
    "NOTE_OFF_67",
    "04_overlap_same_pitch.mid": "VELOCITY_25 NOTE_ON_60 TIME_SHIFT_50 VELOCITY_23 NOTE_ON_60 TIME_SHIFT_50 "
    "NOTE_OFF_60 TIME_SHIFT_50 NOTE_OFF_60",
    "05_duplicate_and_stray_noteoffs.mid": "VELOCITY_22 NOTE_ON_69 TIME_SHIFT_10 NOTE_ON_69 TIME_SHIFT_20 "
    "NOTE_OFF_69 TIME_SHIFT_10 NOTE_OFF_69 TIME_SHIFT_10 NOTE_ON_74 TIME_SHIFT_20 NOTE_OFF_74",
    "06_zero_length_note.mid": "TIME_SHIFT_10 VELOCITY_22 NOTE_ON_72 TIME_SHIFT_1 NOTE_OFF_72 TIME_SHIFT_29 "
    "VELOCITY_20 NOTE_ON_72 TIME_SHIFT_20 NOTE_OFF_72",
    "08_sustain_basic.mid": "VELOCITY_25 NOTE_ON_60 TIME_SHIFT_30 NOTE_ON_64 TIME_SHIFT_70 NOTE_OFF_60 NOTE_OFF_64 "
    "TIME_SHIFT_20 NOTE_ON_67 TIME_SHIFT_30 NOTE_OFF_67",
    "09_sustain_restrike.mid": "TIME_SHIFT_10 VELOCITY_25 NOTE_ON_60 TIME_SHIFT_30 NOTE_OFF_60 NOTE_ON_60 "
    "TIME_SHIFT_30 NOTE_OFF_60 NOTE_ON_60 TIME_SHIFT_30 NOTE_ON_64 TIME_SHIFT_50 NOTE_OFF_60 TIME_SHIFT_50 "
    "NOTE_OFF_64",
    # Magenta's rule for a pedal never released: held notes end at the last event (1.5 s).
    "10_sustain_never_released.mid": "VELOCITY_25 NOTE_ON_60 TIME_SHIFT_50 NOTE_ON_64 TIME_SHIFT_50 NOTE_ON_67 "
    "TIME_SHIFT_50 NOTE_OFF_60 NOTE_OFF_64 NOTE_OFF_67",
    "15_tempo_changes.mid": "VELOCITY_25 NOTE_ON_60 TIME_SHIFT_50 NOTE_OFF_60 TIME_SHIFT_40 NOTE_ON_62 "
    "TIME_SHIFT_30 NOTE_OFF_62 TIME_SHIFT_80 NOTE_ON_64 TIME_SHIFT_100 TIME_SHIFT_25 NOTE_OFF_64 TIME_SHIFT_25 "
    "NOTE_ON_65 TIME_SHIFT_10 NOTE_OFF_65",
    "16_tempo_in_nonzero_track.mid": "VELOCITY_25 NOTE_ON_60 TIME_SHIFT_100 NOTE_OFF_60 NOTE_ON_64 TIME_SHIFT_100 "
    "NOTE_OFF_64",
    "19_type0_multichannel.mid": "VELOCITY_25 NOTE_ON_60 VELOCITY_20 NOTE_ON_72 TIME_SHIFT_30 VELOCITY_25 "
    "NOTE_ON_64 TIME_SHIFT_50 NOTE_OFF_60 NOTE_OFF_64 TIME_SHIFT_20 NOTE_OFF_72",
    "23_drums_channel10.mid": "VELOCITY_25 NOTE_ON_60 TIME_SHIFT_100 NOTE_OFF_60",
    "24_pitch_range_edges.mid": "VELOCITY_25 NOTE_ON_0 TIME_SHIFT_8 NOTE_OFF_0 TIME_SHIFT_2 NOTE_ON_20 "
    "TIME_SHIFT_8 NOTE_OFF_20 TIME_SHIFT_2 NOTE_ON_21 TIME_SHIFT_8 NOTE_OFF_21 TIME_SHIFT_2 NOTE_ON_60 "
    "TIME_SHIFT_8 NOTE_OFF_60 TIME_SHIFT_2 NOTE_ON_108 TIME_SHIFT_8 NOTE_OFF_108 TIME_SHIFT_2 NOTE_ON_109 "
    "TIME_SHIFT_8 NOTE_OFF_109 TIME_SHIFT_2 NOTE_ON_127 TIME_SHIFT_8 NOTE_OFF_127",
    "31_header_no_tracks.mid": "",
    "40_leading_silence.mid": "TIME_SHIFT_100 TIME_SHIFT_100 TIME_SHIFT_100 TIME_SHIFT_37 VELOCITY_25 NOTE_ON_60 "
    "TIME_SHIFT_50 NOTE_OFF_60 NOTE_ON_64 TIME_SHIFT_50 NOTE_OFF_64",
    "41_long_gaps_time_shift.mid": "VELOCITY_25 NOTE_ON_60 TIME_SHIFT_10 NOTE_OFF_60 TIME_SHIFT_100 NOTE_ON_62 "
    "TIME_SHIFT_10 NOTE_OFF_62 TIME_SHIFT_100 TIME_SHIFT_100 NOTE_ON_64 TIME_SHIFT_10 NOTE_OFF_64 TIME_SHIFT_100 "
    "TIME_SHIFT_100 TIME_SHIFT_100 TIME_SHIFT_1 NOTE_ON_65 TIME_SHIFT_9 NOTE_OFF_65 TIME_SHIFT_100 NOTE_ON_67 "
    "TIME_SHIFT_10 NOTE_OFF_67",
    "43_unclosed_note.mid": "VELOCITY_25 NOTE_ON_60 TIME_SHIFT_50 NOTE_ON_64 TIME_SHIFT_50 NOTE_OFF_64 "
    "TIME_SHIFT_100 NOTE_OFF_60",
}

# (pitch, start s, end s, velocity) after the pedal, in sequence order.
EXPECTED_NOTES = {
    "04_overlap_same_pitch.mid": [(60, 0.0, 1.0, 100), (60, 0.5, 1.5, 90)],
    "06_zero_length_note.mid": [(72, 0.1, 0.1, 88), (72, 0.4, 0.6, 80)],
    "09_sustain_restrike.mid": [(60, 0.1, 0.4, 100), (60, 0.4, 0.7, 100), (60, 0.7, 1.5, 100), (64, 1.0, 2.0, 100)],
    "10_sustain_never_released.mid": [(60, 0.0, 1.5, 100), (64, 0.5, 1.5, 100), (67, 1.0, 1.5, 100)],
    "16_tempo_in_nonzero_track.mid": [(60, 0.0, 1.0, 100), (64, 1.0, 2.0, 100)],
    "43_unclosed_note.mid": [(60, 0.0, 2.0, 100), (64, 0.5, 1.0, 100)],
}

EXPECTED_ERRORS = {
    "26_truncated_file.bin": "unexpected end of data in track 2",
    "30_empty_file.bin": "empty file",
}


def rounded(notes):
    return [(pitch, round(start, 6), round(end, 6), velocity) for pitch, start, end, velocity in notes.as_tuples()]


@pytest.mark.parametrize("name", sorted(EXPECTED_TOKENS))
def test_bugcase_tokens(bugcases, name):
    tokenizer = PerformanceTokenizer()
    ids = tokenizer.encode_file(bugcases / name)
    assert " ".join(tokenizer.ids_to_tokens(ids)) == EXPECTED_TOKENS[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_NOTES))
def test_bugcase_notes(bugcases, name):
    assert rounded(read_midi(bugcases / name).notes) == EXPECTED_NOTES[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_ERRORS))
def test_bugcase_clear_error(bugcases, name):
    with pytest.raises(MidiReadError) as caught:
        PerformanceTokenizer().encode_file(bugcases / name)
    assert caught.value.path == str(bugcases / name)
    assert EXPECTED_ERRORS[name] in caught.value.reason
    assert str(caught.value).startswith(str(bugcases / name))


def test_unclosed_note_reported(bugcases):
    report = read_midi(bugcases / "43_unclosed_note.mid").report
    assert report.unclosed_notes == 1
    assert any("closed 1 note" in notice for notice in report.notices())


def test_tempo_track_reported(bugcases):
    report = read_midi(bugcases / "16_tempo_in_nonzero_track.mid").report
    assert report.tempo_tracks == (1,)
    assert any("outside the first track" in notice for notice in report.notices())


def test_multichannel_drums_dropped(bugcases):
    performance = read_midi(bugcases / "19_type0_multichannel.mid")
    assert rounded(performance.notes) == [(60, 0.0, 0.8, 100), (72, 0.0, 1.0, 80), (64, 0.3, 0.8, 100)]
    assert performance.notes.channel.tolist() == [0, 1, 0]
    assert performance.report.drum_notes_dropped == 3
    assert performance.report.channels == (0, 1)
    assert len(performance.report.notices()) == 2


def test_multichannel_drums_kept(bugcases):
    tokenizer = PerformanceTokenizer(include_drums=True)
    performance = tokenizer.read(bugcases / "19_type0_multichannel.mid")
    assert rounded(performance.notes) == [
        (36, 0.0, 0.01, 120),
        (60, 0.0, 0.8, 100),
        (72, 0.0, 1.0, 80),
        (42, 0.25, 0.26, 90),
        (64, 0.3, 0.8, 100),
        (38, 0.5, 0.51, 110),
    ]
    expected = (
        "VELOCITY_30 NOTE_ON_36 VELOCITY_25 NOTE_ON_60 VELOCITY_20 NOTE_ON_72 TIME_SHIFT_1 NOTE_OFF_36 "
        "TIME_SHIFT_24 VELOCITY_23 NOTE_ON_42 TIME_SHIFT_1 NOTE_OFF_42 TIME_SHIFT_4 VELOCITY_25 NOTE_ON_64 "
        "TIME_SHIFT_20 VELOCITY_28 NOTE_ON_38 TIME_SHIFT_1 NOTE_OFF_38 TIME_SHIFT_29 NOTE_OFF_60 NOTE_OFF_64 "
        "TIME_SHIFT_20 NOTE_OFF_72"
    )
    assert " ".join(tokenizer.ids_to_tokens(tokenizer.encode(performance))) == expected


def test_drum_hits_kept_unsustained(bugcases):
    tokenizer = PerformanceTokenizer(include_drums=True)
    performance = tokenizer.read(bugcases / "23_drums_channel10.mid")
    assert rounded(performance.notes) == [
        (36, 0.0, 0.0, 120),
        (60, 0.0, 1.0, 100),
        (38, 0.25, 0.26, 110),
        (42, 0.5, 0.5, 90),
        (46, 0.75, 0.8, 70),
    ]
    tokens = tokenizer.ids_to_tokens(tokenizer.encode(performance))
    # Zero-length hits last one step: 36 over steps 0-1, 42 over steps 50-51.
    assert tokens[:6] == ["VELOCITY_30", "NOTE_ON_36", "VELOCITY_25", "NOTE_ON_60", "TIME_SHIFT_1", "NOTE_OFF_36"]
    assert tokens[12:16] == ["VELOCITY_23", "NOTE_ON_42", "TIME_SHIFT_1", "NOTE_OFF_42"]


def test_piano_range_drops_outside(bugcases):
    tokenizer = PerformanceTokenizer(min_pitch=21, max_pitch=108)
    performance = tokenizer.read(bugcases / "24_pitch_range_edges.mid")
    assert rounded(performance.notes) == [(21, 0.2, 0.28, 100), (60, 0.3, 0.38, 100), (108, 0.4, 0.48, 100)]
    assert performance.report.out_of_range_notes == 4
    ids = tokenizer.encode(performance)
    tokens = tokenizer.ids_to_tokens(ids)
    assert tokens.count("NOTE_ON_21") == 1
    assert tokens.count("NOTE_OFF_108") == 1
    # Every id stays inside its own type's range.
    assert ids.min() >= 2
    assert ids.max() < tokenizer.vocab_size


def test_header_without_tracks_empty(bugcases):
    performance = read_midi(bugcases / "31_header_no_tracks.mid")
    assert len(performance.notes) == 0
    assert performance.report.notices() == []


DECODE_EXPECTED = {
    "D01_noteoff_without_noteon.json": [(62, 0.0, 0.5, 97)],
    "D02_noteon_never_closed.json": [(60, 0.0, 2.0, 97), (64, 0.5, 1.0, 97)],
    "D03_missing_initial_velocity.json": [(60, 0.0, 0.5, 100), (62, 0.5, 1.0, 37)],
    "D05_empty.json": [],
    "D07_double_noteon.json": [(60, 0.0, 1.0, 97), (60, 0.5, 1.5, 97)],
}

# Notes as pretty_midi reads them back from the written file.
DECODE_WRITTEN = {
    "D01_noteoff_without_noteon.json": [(62, 0.0, 0.5, 97)],
    "D02_noteon_never_closed.json": [(60, 0.0, 2.0, 97), (64, 0.5, 1.0, 97)],
    "D03_missing_initial_velocity.json": [(60, 0.0, 0.5, 100), (62, 0.5, 1.0, 37)],
    "D05_empty.json": [],
    # Same-pitch overlaps are written as a re-strike: the first note ends where the second starts.
    "D07_double_noteon.json": [(60, 0.0, 0.5, 97), (60, 0.5, 1.5, 97)],
}


def load_tokens(bugcases, name):
    return json.loads((bugcases / "decode" / name).read_text())["tokens"]


@pytest.mark.parametrize("name", sorted(DECODE_EXPECTED))
def test_decode_case_notes(bugcases, name):
    tokenizer = PerformanceTokenizer()
    notes = tokenizer.decode(tokenizer.tokens_to_ids(load_tokens(bugcases, name)))
    assert rounded(notes) == DECODE_EXPECTED[name]


@pytest.mark.parametrize("name", sorted(DECODE_WRITTEN))
def test_decode_case_written_midi(bugcases, name, tmp_path):
    import pretty_midi

    tokenizer = PerformanceTokenizer()
    path = tmp_path / "decoded.mid"
    tokenizer.decode_to_file(tokenizer.tokens_to_ids(load_tokens(bugcases, name)), path)
    midi = pretty_midi.PrettyMIDI(str(path))
    notes = sorted(
        (note.pitch, round(note.start, 6), round(note.end, 6), note.velocity)
        for instrument in midi.instruments
        for note in instrument.notes
    )
    assert notes == DECODE_WRITTEN[name]
    assert len(midi.instruments) <= 1


def test_decode_stray_offs_reported(bugcases):
    tokenizer = PerformanceTokenizer()
    ids = tokenizer.tokens_to_ids(load_tokens(bugcases, "D01_noteoff_without_noteon.json"))
    report = tokenizer.decode_with_report(ids)[1]
    assert report.stray_note_offs == 2
    assert report.notices() == ["ignored 2 NOTE_OFFs without a sounding note"]
