"""MIDI reader: each kind of input, built byte by byte (1 tick = 1 ms unless a test states another division)."""

from __future__ import annotations

import tracemalloc

import pytest
from smf_builder import (
    chunk,
    header,
    note_off,
    note_on,
    pedal,
    program,
    riff_rmid,
    smf,
    tempo,
    text,
    track,
    vlq,
)

from pact.encodings.midi import read_midi
from pact.encodings.performance import PerformanceTokenizer
from pact.errors import MidiReadError


def read_bytes(tmp_path, data: bytes, name: str = "test.mid", **options):
    path = tmp_path / name
    path.write_bytes(data)
    return read_midi(path, **options)


def note_list(performance):
    return [(pitch, round(start, 6), round(end, 6), velocity) for pitch, start, end, velocity in performance.notes.as_tuples()]


def read_error(tmp_path, data: bytes, name: str = "bad.mid") -> MidiReadError:
    with pytest.raises(MidiReadError) as caught:
        read_bytes(tmp_path, data, name)
    assert caught.value.path == str(tmp_path / name)
    return caught.value


# Running status and message kinds.


def test_running_status_with_program_change(tmp_path):
    # A program change (one data byte) under running status, then note-ons under running status.
    body = track(
        (0, program(5)),
        (0, b"\x06"),  # running status: program change 6
        (0, note_on(60, 90)),
        (0, b"\x40\x50"),  # running status: note-on 64, velocity 80
        (500, b"\x3c\x00"),  # note-on velocity 0 = note-off 60
        (0, b"\x40\x00"),
    )
    performance = read_bytes(tmp_path, smf(body))
    assert note_list(performance) == [(60, 0.0, 0.5, 90), (64, 0.0, 0.5, 80)]
    assert performance.notes.program.tolist() == [6, 6]


def test_running_status_survives_meta_event(tmp_path):
    body = track((0, note_on(60)), (100, text(1, b"marker")), (400, b"\x3c\x00"))
    assert note_list(read_bytes(tmp_path, smf(body))) == [(60, 0.0, 0.5, 100)]


def test_running_status_without_status_rejected(tmp_path):
    error = read_error(tmp_path, smf(track((0, b"\x3c\x40"))))
    assert "without a status byte" in error.reason
    assert "track 1" in error.reason


def test_release_velocity_ignored(tmp_path):
    body = track((0, note_on(60, 70)), (250, bytes((0x80, 60, 127))))
    assert note_list(read_bytes(tmp_path, smf(body))) == [(60, 0.0, 0.25, 70)]


# Pairing of note-ons and note-offs.


def test_same_pitch_overlap_first_in_first_out(tmp_path):
    body = track((0, note_on(60, 100)), (200, note_on(60, 80)), (300, note_off(60)), (300, note_off(60)))
    performance = read_bytes(tmp_path, smf(body))
    assert note_list(performance) == [(60, 0.0, 0.5, 100), (60, 0.2, 0.8, 80)]
    assert performance.report.overlapping_notes == 1


def test_stray_note_offs_ignored(tmp_path):
    body = track((0, note_off(50)), (0, note_on(60)), (100, note_off(60)), (0, note_off(60)), (50, note_off(61)))
    performance = read_bytes(tmp_path, smf(body))
    assert note_list(performance) == [(60, 0.0, 0.1, 100)]
    assert performance.report.stray_note_offs == 3


def test_tracks_pair_separately(tmp_path):
    # Same channel and pitch in two tracks: a note-off in track 2 does not close track 1's note.
    first = track((0, note_on(60, 100)), (1000, note_off(60)))
    second = track((200, note_on(60, 50)), (100, note_off(60)))
    performance = read_bytes(tmp_path, smf(first, second))
    assert note_list(performance) == [(60, 0.0, 1.0, 100), (60, 0.2, 0.3, 50)]
    assert performance.report.tracks == 2
    assert any("merged 2 tracks" in notice for notice in performance.report.notices())


def test_zero_length_note_kept(tmp_path):
    body = track((100, note_on(72)), (0, note_off(72)))
    performance = read_bytes(tmp_path, smf(body))
    assert note_list(performance) == [(72, 0.1, 0.1, 100)]
    assert performance.report.zero_length_notes == 1


def test_unclosed_note_ends_at_track_end(tmp_path):
    first = track((0, note_on(60)), (700, text(1, b"end")))
    second = track((0, note_on(64)), (100, note_off(64)), (2000, text(1, b"late")))
    performance = read_bytes(tmp_path, smf(first, second))
    # Track 1 ends at 0.7 s, whatever the other track does.
    assert note_list(performance) == [(60, 0.0, 0.7, 100), (64, 0.0, 0.1, 100)]
    assert performance.report.unclosed_notes == 1


def test_events_after_end_of_track_read(tmp_path):
    body = track((0, note_on(60)), (100, note_off(60)), (0, b"\xff\x2f\x00"), (0, note_on(62)), (100, note_off(62)))
    assert note_list(read_bytes(tmp_path, smf(body))) == [(60, 0.0, 0.1, 100), (62, 0.1, 0.2, 100)]


# Sustain pedal.


def test_pedal_other_track_same_channel(tmp_path):
    notes = track((0, note_on(60)), (200, note_off(60)))
    pedals = track((100, pedal(127)), (900, pedal(0)))
    assert note_list(read_bytes(tmp_path, smf(notes, pedals))) == [(60, 0.0, 1.0, 100)]


def test_pedal_other_channel_no_effect(tmp_path):
    notes = track((0, note_on(60)), (200, note_off(60)))
    pedals = track((100, pedal(127, channel=1)), (900, pedal(0, channel=1)))
    assert note_list(read_bytes(tmp_path, smf(notes, pedals))) == [(60, 0.0, 0.2, 100)]


def test_pedal_threshold_64(tmp_path):
    body = track((0, pedal(64)), (0, note_on(60)), (100, note_off(60)), (100, pedal(63)))
    assert note_list(read_bytes(tmp_path, smf(body))) == [(60, 0.0, 0.2, 100)]


def test_pedal_restrike_same_instant_removes_one(tmp_path):
    # Under the pedal, two onsets of one pitch at one tick keep only the later note.
    body = track((0, pedal(127)), (0, note_on(60, 100)), (0, note_on(60, 50)), (100, note_off(60)), (0, note_off(60)))
    body += b""
    performance = read_bytes(tmp_path, smf(body, track((300, pedal(0)))))
    assert note_list(performance) == [(60, 0.0, 0.3, 50)]
    assert performance.report.restruck_notes_removed == 1


def test_drums_never_sustained(tmp_path):
    body = track((0, pedal(127, channel=9)), (0, note_on(36, 100, channel=9)), (10, note_off(36, channel=9)),
                 (990, pedal(0, channel=9)))
    performance = read_bytes(tmp_path, smf(body), include_drums=True)
    assert note_list(performance) == [(36, 0.0, 0.01, 100)]
    assert performance.report.drum_notes_kept == 1


def test_sustain_off_gives_key_up_ends(tmp_path):
    body = track((0, pedal(127)), (0, note_on(60)), (100, note_off(60)), (900, pedal(0)))
    assert note_list(read_bytes(tmp_path, smf(body), sustain=False)) == [(60, 0.0, 0.1, 100)]
    assert note_list(read_bytes(tmp_path, smf(body))) == [(60, 0.0, 1.0, 100)]


# Tempo and time division.


def test_tempo_in_late_track(tmp_path):
    first = track((0, note_on(60)), (1000, note_off(60)))
    second = track((0, text(3, b"strings")))
    third = track((0, tempo(1_000_000)))  # 60 bpm: 2 ms per tick
    performance = read_bytes(tmp_path, smf(first, second, third))
    assert note_list(performance) == [(60, 0.0, 2.0, 100)]
    assert performance.report.tempo_tracks == (2,)


def test_tempo_changes_merged_across_tracks(tmp_path):
    first = track((0, note_on(60)), (3000, note_off(60)))
    second = track((1000, tempo(1_000_000)))
    third = track((2000, tempo(250_000)))
    # 1000 ticks at 1 ms, 1000 at 2 ms, 1000 at 0.5 ms.
    assert note_list(read_bytes(tmp_path, smf(first, second, third))) == [(60, 0.0, 3.5, 100)]


def test_tempo_as_last_event(tmp_path):
    # A set_tempo that is the last event of its track, with no End-of-Track after it.
    conductor = track((1000, tempo(1_000_000)), end_of_track=False)
    notes = track((0, note_on(60)), (2000, note_off(60)))
    assert note_list(read_bytes(tmp_path, smf(conductor, notes))) == [(60, 0.0, 3.0, 100)]


def test_invalid_tempo_ignored(tmp_path):
    conductor = track((0, b"\xff\x51\x03\x00\x00\x00"), (0, b"\xff\x51\x02\x07\xa1"))
    notes = track((0, note_on(60)), (1000, note_off(60)))
    performance = read_bytes(tmp_path, smf(conductor, notes))
    assert note_list(performance) == [(60, 0.0, 1.0, 100)]
    assert performance.report.invalid_tempo_events == 2


def test_smpte_division(tmp_path):
    # -25 frames per second, 40 ticks per frame: 1000 ticks per second; tempo is ignored.
    division = ((256 - 25) << 8) | 40
    body = track((0, tempo(1_000_000)), (0, note_on(60)), (500, note_off(60)))
    performance = read_bytes(tmp_path, smf(body, division=division))
    assert note_list(performance) == [(60, 0.0, 0.5, 100)]
    assert performance.report.smpte


def test_smpte_drop_frame_rate(tmp_path):
    # -29 means 30000/1001 (about 29.97) frames per second; 100 ticks per frame.
    division = ((256 - 29) << 8) | 100
    body = track((0, note_on(60)), (3000, note_off(60)))
    assert note_list(read_bytes(tmp_path, smf(body, division=division))) == [(60, 0.0, 1.001, 100)]


def test_ticks_per_quarter_scale(tmp_path):
    body = track((0, note_on(60)), (96, note_off(60)))
    assert note_list(read_bytes(tmp_path, smf(body, division=96))) == [(60, 0.0, 0.5, 100)]


# Containers and file layouts.


def test_riff_rmid_wrapper(tmp_path):
    inner = smf(track((0, note_on(60)), (500, note_off(60))))
    performance = read_bytes(tmp_path, riff_rmid(inner), "song.rmi")
    assert note_list(performance) == [(60, 0.0, 0.5, 100)]
    assert performance.report.riff_wrapped


def test_riff_other_form_rejected(tmp_path):
    data = b"RIFF" + (4).to_bytes(4, "little") + b"WAVE"
    assert "RIFF file of type 'WAVE'" in read_error(tmp_path, data, "sound.wav").reason


def test_karaoke_file(tmp_path):
    words = track((0, text(3, b"Words")), (0, text(1, b"@KMIDI KARAOKE FILE")), (0, text(5, b"Hel")),
                  (250, text(5, b"lo")))
    melody = track((0, note_on(67)), (250, note_off(67)), (0, note_on(69)), (250, note_off(69)))
    tokenizer = PerformanceTokenizer()
    path = tmp_path / "song.kar"
    path.write_bytes(smf(track((0, tempo(500_000))), words, melody))
    assert ".kar" in tokenizer.file_suffixes
    tokens = tokenizer.ids_to_tokens(tokenizer.encode_file(path))
    assert tokens == ["VELOCITY_25", "NOTE_ON_67", "TIME_SHIFT_25", "NOTE_OFF_67", "NOTE_ON_69", "TIME_SHIFT_25",
                      "NOTE_OFF_69"]


def test_unknown_chunk_skipped(tmp_path):
    data = header(1) + chunk(b"XFIH", b"\x01\x02\x03") + track((0, note_on(60)), (100, note_off(60)))
    assert note_list(read_bytes(tmp_path, data)) == [(60, 0.0, 0.1, 100)]


def test_long_header_honoured(tmp_path):
    data = header(1, length=8, extra=b"\xaa\xbb") + track((0, note_on(60)), (100, note_off(60)))
    assert note_list(read_bytes(tmp_path, data)) == [(60, 0.0, 0.1, 100)]


def test_format_zero_multichannel(tmp_path):
    body = track((0, program(40, channel=1)), (0, note_on(60)), (0, note_on(72, channel=1)), (100, note_off(60)),
                 (0, note_off(72, channel=1)))
    performance = read_bytes(tmp_path, smf(body, format_=0))
    assert performance.report.channels == (0, 1)
    assert performance.report.programs == (0, 40)
    assert performance.notes.program.tolist() == [0, 40]


def test_maximum_track_count(tmp_path):
    # 65535, the largest count the header can declare.
    tracks = [track((index % 50, note_on(60 + index % 12)), (10, note_off(60 + index % 12))) for index in range(65535)]
    performance = read_bytes(tmp_path, smf(*tracks))
    assert len(performance.notes) == 65535
    assert performance.report.tracks == 65535
    assert performance.notes.start.max() == 0.049


def test_long_file(tmp_path):
    # 200000 notes of 10 ms, one after another: 2000 seconds in one track.
    events = []
    for index in range(200_000):
        events += [(0, note_on(40 + index % 40, 1 + index % 127)), (10, note_off(40 + index % 40))]
    performance = read_bytes(tmp_path, smf(track(*events)))
    assert len(performance.notes) == 200_000
    assert performance.notes.end.max() == 2000.0
    assert performance.notes.velocity[:3].tolist() == [1, 2, 3]
    tokenizer = PerformanceTokenizer()
    assert tokenizer.duration_seconds(tokenizer.encode(performance)) == 2000.0


def test_empty_valid_file(tmp_path):
    performance = read_bytes(tmp_path, smf(track()))
    assert len(performance.notes) == 0
    assert PerformanceTokenizer().encode(performance).tolist() == []


# Bounded memory on crafted files.


def peak_bytes_while_reading(tmp_path, data: bytes):
    path = tmp_path / "crafted.mid"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        try:
            result = read_midi(path)
        except MidiReadError as error:
            result = error
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, peak


def test_huge_delta_times_rejected(tmp_path):
    # Four maximal delta times at 1 tick per quarter note put the note-off years later.
    body = track((0, note_on(60)), *[(0x0FFFFFFF, text(1, b"x"))] * 4, (0x0FFFFFFF, note_off(60)))
    result, peak = peak_bytes_while_reading(tmp_path, smf(body, division=1))
    assert isinstance(result, MidiReadError)
    assert "24-hour limit" in result.reason
    assert peak < 20_000_000


def test_huge_end_of_track_delta_harmless(tmp_path):
    body = track((0, note_on(60)), (100, note_off(60)), (0x0FFFFFFF, text(1, b"late")))
    result, peak = peak_bytes_while_reading(tmp_path, smf(body, division=1))
    assert note_list(result)[0][0] == 60
    assert peak < 20_000_000


def test_huge_declared_chunk_length(tmp_path):
    data = header(1) + chunk(b"MTrk", b"\x00\x90\x3c\x40", declared_length=0xFFFFFFFF)
    result, peak = peak_bytes_while_reading(tmp_path, data)
    assert isinstance(result, MidiReadError)
    assert "unexpected end of data in track 1" in result.reason
    assert peak < 20_000_000


def test_huge_declared_track_count(tmp_path):
    data = header(65535) + track((0, note_on(60)), (100, note_off(60)))
    result, peak = peak_bytes_while_reading(tmp_path, data)
    assert isinstance(result, MidiReadError)
    assert "declares 65535 tracks but the file ends after 1" in result.reason
    assert peak < 20_000_000


def test_huge_meta_length(tmp_path):
    body = track((0, b"\xff\x01" + vlq(0x0FFFFFFF) + b"abc"), end_of_track=False)
    assert "runs past the end of the track chunk" in read_error(tmp_path, smf(body)).reason


# Unreadable files: every one raises MidiReadError with a reason.


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"hello, this is text\n", "not a MIDI file: no MThd header"),
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "not a MIDI file: no MThd header"),
        (b"MThd\x00\x00", "unexpected end of data in the MThd header"),
        (header(1, length=4), "invalid MThd header: length 4"),
        (header(1, format_=7), "unsupported SMF format 7"),
        (header(1, division=0), "invalid time division"),
        (header(2) + track((0, note_on(60))), "declares 2 tracks but the file ends after 1"),
        (header(1) + chunk(b"MTrk", b"\x00\x90\x3c"), "runs past the end of the track chunk"),
        (header(1) + b"MTrk\x00\x00\x00\x08\x00\x90\x3c\x40\x81\x81\x81\x81", "unexpected end of data in track 1"),
        (smf(track((0, b"\xf4\x00"))), "invalid status byte 0xF4"),
        (smf(track((0, b"\x90\x3c\x90")), track()), "invalid data byte 0x90"),
        (smf(track((0, note_on(60))), chunk(b"MTrk", b"\x81\x81\x81\x81\x01\x90\x3c\x00")), "longer than 4 bytes"),
        (b"RIFF\x04\x00\x00\x00RMID", "without a 'data' chunk"),
        (b"RIFF\x00", "unexpected end of data in the RIFF header"),
    ],
)
def test_unreadable_file_reason(tmp_path, data, reason):
    assert reason in read_error(tmp_path, data).reason


def test_truncated_inside_event(tmp_path):
    data = header(1) + chunk(b"MTrk", b"\x00\x90\x3c", declared_length=3)
    assert "runs past the end of the track chunk in track 1" in read_error(tmp_path, data).reason


def test_missing_file(tmp_path):
    with pytest.raises(MidiReadError, match="file not found"):
        read_midi(tmp_path / "absent.mid")


def test_directory_path(tmp_path):
    with pytest.raises(MidiReadError, match="is a directory"):
        read_midi(tmp_path)
