"""Fuzzing: random and mutated bytes into the reader, random ids into the decoder and writer."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smf_builder import note_off, note_on, pedal, program, smf, tempo, text, track

from pact.encodings.midi import Notes, read_midi
from pact.encodings.performance import PerformanceTokenizer
from pact.errors import MidiReadError

TOKENIZER = PerformanceTokenizer()

SEED_FILE = smf(
    track((0, tempo(600_000)), (0, text(3, b"conductor")), (480, tempo(400_000))),
    track(
        (0, program(0)),
        (0, pedal(127)),
        (0, note_on(60, 90)),
        (0, b"\x40\x50"),
        (240, note_off(60)),
        (0, note_on(62, 70, channel=1)),
        (120, b"\x80\x40\x40"),
        (0, b"\x3e\x00"),
        (300, pedal(0)),
        (0, note_on(36, 100, channel=9)),
        (10, note_off(36, channel=9)),
    ),
)


def seed_files() -> list[bytes]:
    bugcases = Path(__file__).resolve().parents[1].parent / "shared" / "bugcases"
    files = [SEED_FILE]
    if bugcases.exists():
        files += [path.read_bytes() for path in sorted(bugcases.glob("*.mid"))]
    return files


SEEDS = seed_files()


def read_or_reject(directory: str, data: bytes):
    """Read bytes through a file; the only exception allowed out is MidiReadError."""
    path = Path(directory) / "fuzz.mid"
    path.write_bytes(data)
    try:
        performance = read_midi(path, include_drums=True)
    except MidiReadError as error:
        assert error.path == str(path)
        assert error.reason
        return None

    ids = TOKENIZER.encode(performance)
    assert ids.dtype == np.int32
    assert ids.min(initial=2) >= 2
    assert ids.max(initial=2) < TOKENIZER.vocab_size
    assert np.all(performance.notes.end >= performance.notes.start)
    return performance


# A generous deadline turns a hang or a quadratic path into a failure; reads take milliseconds.
@settings(max_examples=300, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300))
def test_random_bytes_read(data):
    with tempfile.TemporaryDirectory() as directory:
        read_or_reject(directory, data)
        read_or_reject(directory, b"MThd\x00\x00\x00\x06" + data)


mutation = st.tuples(
    st.sampled_from(["flip", "insert", "delete", "truncate", "overwrite"]),
    st.integers(0, 10_000),  # position, taken modulo the length
    st.integers(0, 255),  # byte value
)


def mutate(data: bytes, mutations) -> bytes:
    buffer = bytearray(data)
    for kind, position, value in mutations:
        if not buffer:
            break
        position %= len(buffer)
        if kind == "flip":
            buffer[position] ^= 1 << (value % 8)
        elif kind == "insert":
            buffer.insert(position, value)
        elif kind == "delete":
            del buffer[position]
        elif kind == "truncate":
            del buffer[position:]
        else:
            buffer[position] = value
    return bytes(buffer)


@settings(max_examples=400, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(range(len(SEEDS))), mutations=st.lists(mutation, min_size=1, max_size=6))
def test_mutated_midi_read(seed, mutations):
    with tempfile.TemporaryDirectory() as directory:
        read_or_reject(directory, mutate(SEEDS[seed], mutations))


def test_seed_file_reads():
    with tempfile.TemporaryDirectory() as directory:
        performance = read_or_reject(directory, SEED_FILE)
    assert performance is not None
    assert len(performance.notes) == 4


ids_strategy = st.lists(st.integers(0, TOKENIZER.vocab_size - 1), max_size=200)
# Mostly note and time events, so that notes form often.
event_ids = st.lists(
    st.one_of(
        st.integers(TOKENIZER.note_on_offset + 58, TOKENIZER.note_on_offset + 63),
        st.integers(TOKENIZER.note_off_offset + 58, TOKENIZER.note_off_offset + 63),
        st.integers(TOKENIZER.time_shift_offset, TOKENIZER.time_shift_offset + 20),
        st.integers(TOKENIZER.velocity_offset, TOKENIZER.vocab_size - 1),
        st.just(0),
    ),
    max_size=200,
)


def check_decode_write(ids):
    import pretty_midi

    notes = TOKENIZER.decode(ids)
    assert np.all(notes.end > notes.start)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "decoded.mid"
        TOKENIZER.write(notes, path)
        midi = pretty_midi.PrettyMIDI(str(path))
        written = [note for instrument in midi.instruments for note in instrument.notes]
        assert len(written) <= len(notes)
        assert all(note.end >= note.start for note in written)
        # pact reads back the notes, with same-pitch overlaps cut as re-strikes.
        expected = TOKENIZER.encode(restrike(notes))
        assert TOKENIZER.encode(read_midi(path).notes).tolist() == expected.tolist()

    # A second round changes nothing.
    once = TOKENIZER.encode(notes)
    assert TOKENIZER.encode(TOKENIZER.decode(once)).tolist() == once.tolist()


def restrike(notes) -> Notes:
    """Cut each note where the next note of its pitch starts; of two equal onsets keep the later."""
    kept = []
    rows = sorted(zip(notes.pitch.tolist(), notes.start.tolist(), range(len(notes)), notes.end.tolist(),
                      notes.velocity.tolist()))
    for row, following in zip(rows, [*rows[1:], None]):
        pitch, start, _, end, velocity = row
        if following is not None and following[0] == pitch:
            if following[1] == start:
                continue
            end = min(end, following[1])
        kept.append((start, end, pitch, velocity))
    return Notes.from_arrays(*zip(*kept)) if kept else Notes.empty()


@settings(max_examples=200, deadline=None)
@given(ids=ids_strategy)
def test_random_ids_decode(ids):
    check_decode_write(ids)


@settings(max_examples=200, deadline=None)
@given(ids=event_ids)
def test_random_events_decode(ids):
    check_decode_write(ids)


@pytest.mark.parametrize("count", [0, 1, 5000])
def test_all_pad_or_eos(count):
    assert len(TOKENIZER.decode([0] * count)) == 0
    assert len(TOKENIZER.decode([1] * count)) == 0
