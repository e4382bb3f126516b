"""The vectorised sustain rule against note-seq's own `apply_sustain_control_changes`."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pact.encodings.sustain import apply_sustain

# Few pitches, channels and ticks, so that restrikes, ties and pedal edges are frequent.
notes_strategy = st.lists(
    st.tuples(
        st.integers(0, 1),  # channel
        st.integers(60, 62),  # pitch
        st.integers(0, 20),  # onset tick
        st.integers(0, 8),  # length in ticks
    ),
    max_size=12,
)
pedals_strategy = st.lists(
    st.tuples(st.integers(0, 1), st.integers(0, 30), st.sampled_from([0, 63, 64, 127])),
    max_size=8,
)


def note_seq_sustain(notes, pedals):
    """Run note-seq with ticks as seconds and channels as instruments; returns sorted note tuples."""
    from note_seq import sequences_lib
    from note_seq.protobuf import music_pb2

    sequence = music_pb2.NoteSequence()
    for index, (channel, pitch, onset, length) in enumerate(notes):
        note = sequence.notes.add()
        note.instrument = channel
        note.pitch = pitch
        note.start_time = float(onset)
        note.end_time = float(onset + length)
        # Distinct velocities keep note-seq's equality-based list removal from confusing notes.
        note.velocity = index + 1
        sequence.total_time = max(sequence.total_time, note.end_time)
    for channel, tick, value in pedals:
        change = sequence.control_changes.add()
        change.instrument = channel
        change.time = float(tick)
        change.control_number = 64
        change.control_value = value
    result = sequences_lib.apply_sustain_control_changes(sequence)
    return sorted(
        (note.velocity - 1, note.instrument, note.pitch, note.start_time, note.end_time) for note in result.notes
    )


def pact_sustain(notes, pedals):
    channel = np.array([note[0] for note in notes], dtype=np.int64)
    pitch = np.array([note[1] for note in notes], dtype=np.int64)
    onset = np.array([note[2] for note in notes], dtype=np.int64)
    release = onset + np.array([note[3] for note in notes], dtype=np.int64)
    pedal_channel = np.array([pedal[0] for pedal in pedals], dtype=np.int64)
    pedal_tick = np.array([pedal[1] for pedal in pedals], dtype=np.int64)
    pedal_down = np.array([pedal[2] >= 64 for pedal in pedals], dtype=bool)
    last_tick = max([*onset.tolist(), *release.tolist(), *pedal_tick.tolist(), 0])
    end, keep = apply_sustain(onset, release, pitch, channel, pedal_tick, pedal_channel, pedal_down, last_tick)
    return sorted(
        (index, int(channel[index]), int(pitch[index]), float(onset[index]), float(end[index]))
        for index in np.flatnonzero(keep)
    )


@settings(max_examples=400, deadline=None)
@given(notes=notes_strategy, pedals=pedals_strategy)
def test_sustain_matches_note_seq(notes, pedals):
    assert pact_sustain(notes, pedals) == note_seq_sustain(notes, pedals)


def test_sustain_without_pedal_keeps_releases():
    onset = np.array([0, 5, 10])
    release = np.array([4, 9, 30])
    empty = np.zeros(0, dtype=np.int64)
    end, keep = apply_sustain(onset, release, np.array([60, 60, 61]), np.zeros(3, np.int64), empty, empty,
                              np.zeros(0, bool), 30)
    assert end.tolist() == [4, 9, 30]
    assert keep.all()


def test_sustain_restrike_cuts_held_note():
    # Pedal down from tick 0; the held note 60 is cut by its own restrike at tick 5.
    end, keep = apply_sustain(
        np.array([0, 5]),
        np.array([20, 8]),
        np.array([60, 60]),
        np.zeros(2, np.int64),
        np.array([0, 40]),
        np.zeros(2, np.int64),
        np.array([True, False]),
        40,
    )
    assert end.tolist() == [5, 40]
    assert keep.tolist() == [True, True]
