"""Read a MIDI file as one performance: notes in seconds, sustain applied, plus a report.

`read_midi` merges every track and channel into one list of notes:

* Tempo changes count from any track, because the tempo map of a file is global.
* A note-on with velocity 0 is a note-off, and release velocities are ignored.
* Note-ons and note-offs pair per (track, channel, pitch) first in, first out: a note-off
  closes the oldest open note of its pitch. A note-off with no open note is ignored.
* A note whose note-on and note-off share a tick is kept with zero length.
* A note never closed ends at the last event of its track (its End-of-Track) and is
  counted in the report.
* The sustain pedal (CC64 >= 64 is down) applies per channel across all tracks, by
  Magenta's rule (see `pact.encodings.sustain`). Drum notes are never extended.
* Notes on the drum channel (index 9, General MIDI channel 10) are dropped unless
  `include_drums` is set. Notes outside [min_pitch, max_pitch] are dropped after the
  pedal is applied. Both are counted in the report.

`write_midi` writes notes as a one-track piano file.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from pact.atomic_files import atomic_output
from pact.encodings import smf
from pact.encodings.sustain import apply_sustain
from pact.errors import MidiReadError

DRUM_CHANNEL = 9
SUSTAIN_CONTROL = 64
# Maximum performance length read, in seconds. A delta time of up to 2**28 ticks lets a
# tiny corrupt file place a note years later, and every step of silence costs tokens.
MAX_SECONDS = 24 * 3600.0


@dataclasses.dataclass(frozen=True)
class Notes:
    """Notes as parallel arrays, in sequence order: by onset, then pitch, then file order."""

    start: np.ndarray  # (N,) float64 seconds
    end: np.ndarray  # (N,) float64 seconds, >= start
    pitch: np.ndarray  # (N,) int16, 0-127
    velocity: np.ndarray  # (N,) int16, 1-127
    channel: np.ndarray  # (N,) int8, 0-15 (index 9 is the drum channel)
    program: np.ndarray  # (N,) int16, General MIDI program 0-127 at the note-on

    def __len__(self) -> int:
        return len(self.start)

    @classmethod
    def empty(cls) -> Notes:
        return cls.from_arrays([], [], [], [])

    @classmethod
    def from_arrays(cls, start, end, pitch, velocity, channel=None, program=None) -> Notes:
        """Build notes from sequences; channel and program default to 0 (piano)."""
        count = len(start)
        return cls(
            start=np.asarray(start, dtype=np.float64),
            end=np.asarray(end, dtype=np.float64),
            pitch=np.asarray(pitch, dtype=np.int16),
            velocity=np.asarray(velocity, dtype=np.int16),
            channel=np.zeros(count, np.int8) if channel is None else np.asarray(channel, dtype=np.int8),
            program=np.zeros(count, np.int16) if program is None else np.asarray(program, dtype=np.int16),
        )

    def select(self, mask_or_index: np.ndarray) -> Notes:
        return Notes(*(getattr(self, field.name)[mask_or_index] for field in dataclasses.fields(self)))

    @property
    def duration(self) -> float:
        """Seconds from time 0 to the last note end."""
        return float(self.end.max()) if len(self) else 0.0

    def as_tuples(self) -> list[tuple[int, float, float, int]]:
        """(pitch, start, end, velocity) of every note, for printing and tests."""
        return list(
            zip(self.pitch.tolist(), self.start.tolist(), self.end.tolist(), self.velocity.tolist(), strict=True)
        )


@dataclasses.dataclass(frozen=True)
class ReadReport:
    """Counts of the merges, drops and repairs that `read_midi` made in one file."""

    path: str
    tracks: int = 0  # tracks with notes in the performance
    channels: tuple[int, ...] = ()  # 0-based channels of the notes in the performance
    programs: tuple[int, ...] = ()  # programs of the notes in the performance
    drum_notes_dropped: int = 0
    drum_notes_kept: int = 0
    unclosed_notes: int = 0  # notes without a note-off, closed at the end of their track
    out_of_range_notes: int = 0  # dropped: pitch outside the requested range
    pitch_range: tuple[int, int] = (0, 127)
    stray_note_offs: int = 0  # note-offs with no open note, ignored
    overlapping_notes: int = 0  # note-ons while the same pitch was still open (paired first in, first out)
    zero_length_notes: int = 0  # note-on and note-off at one tick, kept
    restruck_notes_removed: int = 0  # pedal restrikes at the same instant, removed by Magenta's rule
    tempo_tracks: tuple[int, ...] = ()  # 0-based tracks with tempo changes
    invalid_tempo_events: int = 0
    smpte: bool = False
    riff_wrapped: bool = False

    def notices(self) -> list[str]:
        """Return one sentence per merge, drop or repair that a user should know about."""
        notices = []
        if self.tracks > 1 or len(self.channels) > 1 or len(self.programs) > 1:
            notices.append(
                f"merged {count_of(self.tracks, 'track')}, {count_of(len(self.channels), 'channel')} "
                f"and {count_of(len(self.programs), 'program')} into one performance"
            )
        if self.drum_notes_dropped:
            notices.append(
                f"dropped {count_of(self.drum_notes_dropped, 'drum note')} (MIDI channel 10); "
                "set the include_drums option to keep them"
            )
        if self.unclosed_notes:
            notices.append(
                f"closed {count_of(self.unclosed_notes, 'note')} without a note-off at the end of its track"
            )
        if self.out_of_range_notes:
            low, high = self.pitch_range
            notices.append(f"dropped {count_of(self.out_of_range_notes, 'note')} outside the pitch range {low}-{high}")
        if any(track > 0 for track in self.tempo_tracks):
            notices.append("applied tempo changes found outside the first track (the tempo map is global)")
        if self.invalid_tempo_events:
            notices.append(f"ignored {count_of(self.invalid_tempo_events, 'invalid tempo event')}")
        return notices


@dataclasses.dataclass(frozen=True)
class MidiPerformance:
    """The notes of one MIDI file and the report of how they were read."""

    notes: Notes
    report: ReadReport


def read_midi(
    path: str | os.PathLike,
    *,
    include_drums: bool = False,
    min_pitch: int = 0,
    max_pitch: int = 127,
    sustain: bool = True,
) -> MidiPerformance:
    """Read a MIDI file as one performance (rules in the module docstring).

    With `sustain=False` notes end at their note-off (key-up) instead of where the pedal
    releases them. Raises `MidiReadError` naming the file for anything unreadable. A valid
    file without notes gives an empty performance.
    """
    contents = smf.read_smf(path)
    return performance_from_smf(
        contents,
        str(path),
        include_drums=include_drums,
        min_pitch=min_pitch,
        max_pitch=max_pitch,
        sustain=sustain,
    )


def performance_from_smf(
    contents: smf.SmfContents,
    path: str,
    *,
    include_drums: bool = False,
    min_pitch: int = 0,
    max_pitch: int = 127,
    sustain: bool = True,
) -> MidiPerformance:
    """Pair notes, apply the pedal and convert to seconds; see `read_midi`."""
    events = contents.events
    kind = events.status >> 4
    channel = (events.status & 0x0F).astype(np.int64)

    # 1. Pair note-ons with note-offs, first in first out, per (track, channel, pitch).
    is_on = (kind == 0x9) & (events.data2 > 0)
    is_off = (kind == 0x8) | ((kind == 0x9) & (events.data2 == 0))
    pairs = pair_note_events(events.track, channel, events.data1, is_on, is_off)
    on_event = pairs.on_event
    unclosed = pairs.off_event < 0
    off_tick = events.tick[np.maximum(pairs.off_event, 0)]
    notes = _NoteTable(
        unclosed=unclosed,
        onset=events.tick[on_event],
        release=np.where(unclosed, contents.track_end_ticks[events.track[on_event]], off_tick),
        pitch=events.data1[on_event].astype(np.int64),
        velocity=events.data2[on_event].astype(np.int64),
        channel=channel[on_event],
        program=_programs_at(events, kind, channel, on_event),
        track=events.track[on_event].astype(np.int64),
        order=on_event,  # the note-on's place in the file breaks ties
    )

    # 2. Drum notes: dropped by default; kept ones are never extended by the pedal.
    is_drum = notes.channel == DRUM_CHANNEL
    num_drums = int(is_drum.sum())
    if not include_drums:
        notes = notes.select(~is_drum)
        is_drum = np.zeros(len(notes.onset), dtype=bool)

    # 3. Sustain pedal on the pitched notes.
    pedal = (kind == 0xB) & (events.data1 == SUSTAIN_CONTROL)
    if not sustain:
        pedal[:] = False
    pitched = np.flatnonzero(~is_drum)
    last_tick = max(
        int(notes.onset[pitched].max(initial=0)),
        int(notes.release[pitched].max(initial=0)),
        int(events.tick[pedal].max(initial=0)),
    )
    sustained_end, survives = apply_sustain(
        notes.onset[pitched],
        notes.release[pitched],
        notes.pitch[pitched],
        notes.channel[pitched],
        events.tick[pedal],
        channel[pedal],
        events.data2[pedal] >= 64,
        last_tick,
    )
    end_tick = notes.release.copy()
    end_tick[pitched] = sustained_end
    alive = np.ones(len(notes.onset), dtype=bool)
    alive[pitched] = survives

    # 4. Pitch range, after the pedal so that it cannot change the other notes.
    in_range = (notes.pitch >= min_pitch) & (notes.pitch <= max_pitch)
    keep = alive & in_range
    notes, end_tick = notes.select(keep), end_tick[keep]

    # 5. Seconds, in the sequence order the encoder relies on.
    start = contents.tempo_map.seconds(notes.onset)
    end = contents.tempo_map.seconds(end_tick)
    _check_duration(path, end)
    order = np.lexsort((notes.order, notes.pitch, start))
    result = Notes(
        start=start[order],
        end=end[order],
        pitch=notes.pitch[order].astype(np.int16),
        velocity=notes.velocity[order].astype(np.int16),
        channel=notes.channel[order].astype(np.int8),
        program=notes.program[order].astype(np.int16),
    )

    zero_length = (notes.onset == notes.release) & ~notes.unclosed
    report = ReadReport(
        path=path,
        tracks=len(np.unique(notes.track)),
        channels=tuple(np.unique(notes.channel).tolist()),
        programs=tuple(np.unique(notes.program).tolist()),
        drum_notes_dropped=0 if include_drums else num_drums,
        drum_notes_kept=num_drums if include_drums else 0,
        unclosed_notes=int(notes.unclosed.sum()),
        out_of_range_notes=int((alive & ~in_range).sum()),
        pitch_range=(min_pitch, max_pitch),
        stray_note_offs=pairs.stray_note_offs,
        overlapping_notes=pairs.overlapping_notes,
        zero_length_notes=int(zero_length.sum()),
        restruck_notes_removed=int((~alive).sum()),
        tempo_tracks=contents.tempo_tracks,
        invalid_tempo_events=contents.invalid_tempo_events,
        smpte=contents.smpte,
        riff_wrapped=contents.riff_wrapped,
    )
    return MidiPerformance(result, report)


@dataclasses.dataclass(frozen=True)
class _NoteTable:
    """Notes in ticks while they are read, in file order of their note-ons; all (N,)."""

    unclosed: np.ndarray  # bool, no note-off: the release is the end of the track
    onset: np.ndarray  # int64, like the fields below
    release: np.ndarray  # key-up (note-off) tick, before the pedal
    pitch: np.ndarray
    velocity: np.ndarray
    channel: np.ndarray
    program: np.ndarray
    track: np.ndarray
    order: np.ndarray  # index of the note-on event in the file

    def select(self, mask: np.ndarray) -> _NoteTable:
        return _NoteTable(*(getattr(self, field.name)[mask] for field in dataclasses.fields(self)))


@dataclasses.dataclass(frozen=True)
class NotePairs:
    """Note-on events paired with their note-off events."""

    on_event: np.ndarray  # (N,) int64 event index of each note-on, ascending
    off_event: np.ndarray  # (N,) int64 event index of the matching note-off, -1 if none
    stray_note_offs: int
    overlapping_notes: int


def pair_note_events(track, channel, pitch, is_on, is_off) -> NotePairs:
    """Pair note-ons and note-offs first in, first out, per (track, channel, pitch).

    Inputs are (E,) arrays over events in order; `is_on` and `is_off` mark the note events.

    Within one key the open-note count is a walk (+1 per on, -1 per off) held at 0: an
    off that would take it below 0 is stray. Held at 0 the count equals the free walk
    minus min(0, its running minimum), so strays are the offs where that minimum drops.
    The k-th valid off then closes the k-th on.
    """
    note_events = np.flatnonzero(is_on | is_off)
    key = (track[note_events].astype(np.int64) * 16 + channel[note_events]) * 128 + pitch[note_events]
    sorted_events = note_events[np.argsort(key, kind="stable")]  # by key, file order inside
    key = np.sort(key, kind="stable")
    on = is_on[sorted_events]
    step = np.where(on, 1, -1)
    count = len(step)
    if count == 0:
        empty = np.zeros(0, dtype=np.int64)
        return NotePairs(empty, empty, 0, 0)

    new_group = np.ones(count, dtype=bool)
    new_group[1:] = key[1:] != key[:-1]
    group = np.cumsum(new_group) - 1
    group_start = np.flatnonzero(new_group)

    # Free walk per group, and its running minimum held at or below 0.
    total = np.cumsum(step)
    walk = total - (total[group_start] - step[group_start])[group]
    spread = 2 * count + 1  # shifts each group below the ones before it
    running_min = np.minimum.accumulate(walk - group * spread) + group * spread
    floor = np.minimum(running_min, 0)
    floor_before = np.zeros(count, dtype=np.int64)
    floor_before[1:] = floor[:-1]
    floor_before[group_start] = 0
    stray = ~on & (floor < floor_before)
    open_before = walk - step - floor_before
    valid_off = ~on & ~stray

    # The k-th on of a group pairs with its k-th valid off.
    on_position = np.flatnonzero(on)
    on_group = group[on_position]
    on_rank = np.arange(len(on_position)) - np.searchsorted(on_group, on_group, side="left")
    valid_offs_per_group = np.bincount(group[valid_off], minlength=len(group_start))
    paired = on_rank < valid_offs_per_group[on_group]
    off_event = np.full(len(on_position), -1, dtype=np.int64)
    off_event[paired] = sorted_events[np.flatnonzero(valid_off)]

    on_event = sorted_events[on_position]
    by_file_order = np.argsort(on_event, kind="stable")
    return NotePairs(
        on_event=on_event[by_file_order].astype(np.int64),
        off_event=off_event[by_file_order],
        stray_note_offs=int(stray.sum()),
        overlapping_notes=int((on & (open_before > 0)).sum()),
    )


def _programs_at(events: smf.ChannelEvents, kind, channel, on_event) -> np.ndarray:
    """Program of each note: the last program change before its note-on on its track and channel."""
    changes = np.flatnonzero(kind == 0xC)
    if not len(changes):
        return np.zeros(len(on_event), dtype=np.int64)
    num_events = len(events)
    block = events.track.astype(np.int64) * 16 + channel
    change_key = block[changes] * num_events + changes
    order = np.argsort(change_key)
    change_key, changes = change_key[order], changes[order]
    index = np.searchsorted(change_key, block[on_event] * num_events + on_event, side="right") - 1
    clipped = np.maximum(index, 0)
    found = (index >= 0) & (change_key[clipped] // num_events == block[on_event])
    return np.where(found, events.data1[changes[clipped]], 0).astype(np.int64)


def count_of(count: int, noun: str) -> str:
    """Format "1 note" or "3 notes"."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _check_duration(path: str, note_ends: np.ndarray) -> None:
    latest = float(note_ends.max(initial=0.0))
    if latest > MAX_SECONDS:
        raise MidiReadError(
            path,
            f"notes continue until {latest / 3600:.1f} hours, past the {MAX_SECONDS / 3600:.0f}-hour limit; "
            "the delta times or tempo are probably corrupt",
        )


# Written files use 1 ms ticks: 500 ticks per quarter note at 500000 us per quarter (120 bpm).
WRITE_TICKS_PER_QUARTER = 500
WRITE_TEMPO = 500_000
_WRITE_TICKS_PER_SECOND = WRITE_TICKS_PER_QUARTER * 1_000_000 // WRITE_TEMPO
_MAX_DELTA = 0x0FFFFFFF  # maximum delta time that a 4-byte variable-length quantity encodes


def write_midi(notes: Notes, path: str | os.PathLike, *, program: int = 0) -> None:
    """Write notes as a format 0 file with one piano track on channel 1, atomically.

    Times are rounded to whole milliseconds. A Standard MIDI File cannot store two
    sounding notes of one pitch on one channel faithfully, so an earlier note is cut where
    the next note of its pitch starts (a re-strike). Of two notes of one pitch that start
    together, only the later in sequence order is written.
    """
    start = np.rint(notes.start * _WRITE_TICKS_PER_SECOND).astype(np.int64)
    end = np.maximum(np.rint(notes.end * _WRITE_TICKS_PER_SECOND).astype(np.int64), start)
    pitch = notes.pitch.astype(np.int64)
    velocity = np.clip(notes.velocity.astype(np.int64), 1, 127)

    # Re-strike truncation within each pitch, notes by onset then sequence order.
    order = np.lexsort((np.arange(len(start)), start, pitch))
    start, end, pitch, velocity = start[order], end[order], pitch[order], velocity[order]
    same_pitch_next = np.zeros(len(start), dtype=bool)
    same_pitch_next[:-1] = pitch[1:] == pitch[:-1]
    next_start = np.append(start[1:], 0)
    cut = same_pitch_next & (next_start < end)
    end = np.where(cut, next_start, end)
    keep = ~(same_pitch_next & (next_start == start))
    start, end, pitch, velocity = start[keep], end[keep], pitch[keep], velocity[keep]

    # At one tick: note-offs of earlier notes, then note-ons, then offs of zero-length notes.
    ticks = np.concatenate([end, start])
    rank = np.concatenate([np.where(end == start, 2, 0), np.ones(len(start), np.int64)])
    status = np.concatenate([np.full(len(end), 0x80), np.full(len(start), 0x90)])
    data2 = np.concatenate([np.full(len(end), 64), velocity])
    both_pitch = np.concatenate([pitch, pitch])
    order = np.lexsort((both_pitch, rank, ticks))

    track = bytearray()
    track += b"\x00\xff\x51\x03" + WRITE_TEMPO.to_bytes(3, "big")
    track += bytes((0x00, 0xC0, program))
    previous = 0
    for tick, event_status, event_pitch, event_data2 in zip(
        ticks[order].tolist(), status[order].tolist(), both_pitch[order].tolist(), data2[order].tolist()
    ):
        delta = tick - previous
        while delta > _MAX_DELTA:  # longer gaps go through empty text events
            track += _variable_length(_MAX_DELTA) + b"\xff\x01\x00"
            delta -= _MAX_DELTA
        track += _variable_length(delta)
        track += bytes((event_status, event_pitch, event_data2))
        previous = tick
    track += b"\x00\xff\x2f\x00"

    header = b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big")
    header += WRITE_TICKS_PER_QUARTER.to_bytes(2, "big")
    data = header + b"MTrk" + len(track).to_bytes(4, "big") + bytes(track)
    _write_atomically(Path(path), data)


def _variable_length(value: int) -> bytes:
    """Encode a MIDI variable-length quantity (7 bits per byte, high bit = more follow)."""
    groups = [value & 0x7F]
    value >>= 7
    while value:
        groups.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(groups))


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename, so a crash never leaves half a file."""
    with atomic_output(path) as temporary:
        temporary.write_bytes(data)
