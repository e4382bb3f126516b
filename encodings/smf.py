"""Parse Standard MIDI Files into flat numpy arrays of channel events and a tempo map.

The parser walks each track chunk once in a tight Python loop that only finds where each
event starts and which status applies (running status included). Delta times, data bytes
and tempo changes are then decoded with numpy over all tracks at once, so a file with
thousands of tiny tracks costs no more per event than a long one.

Input kinds handled: format 0, 1 and 2 files (format 2 tracks are merged onto one
timeline like format 1), running status, metrical and SMPTE time division, RIFF-wrapped
(RMID) files, unknown chunk types (skipped, as the SMF specification requires), header chunks
longer than 6 bytes, and events after End-of-Track (kept, as mido keeps them).

Memory is bounded by the file size: nothing is allocated per tick, and a declared chunk
length is checked against the bytes that exist before anything is read.

Every malformed input raises `MidiReadError(path, reason)`; track numbers in reasons count
MTrk chunks from 1.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from pact.errors import MidiReadError

# Default tempo of a Standard MIDI File: 500000 microseconds per quarter note (120 bpm).
DEFAULT_TEMPO = 500_000

_META = 0x100  # statuses of meta events are stored as _META | meta type
_META_END_OF_TRACK = 0x2F
_META_SET_TEMPO = 0x51
_MAX_VLQ_BYTES = 4


@dataclasses.dataclass(frozen=True)
class ChannelEvents:
    """Channel messages of all tracks, in file order (track by track), running status resolved."""

    track: np.ndarray  # (E,) int32, index of the MTrk chunk, from 0
    tick: np.ndarray  # (E,) int64, absolute time in ticks
    status: np.ndarray  # (E,) uint8, 0x80-0xEF; the low nibble is the channel
    data1: np.ndarray  # (E,) uint8
    data2: np.ndarray  # (E,) uint8, 0 for one-byte messages (program change, channel pressure)

    def __len__(self) -> int:
        return len(self.tick)


class TempoMap:
    """Piecewise-linear map from ticks to seconds.

    Segment k starts at `start_ticks[k]`, where the time is `base_seconds[k]`, and each of
    its ticks lasts `seconds_per_tick[k]` seconds. `seconds` evaluates `base + scale * (tick - start)` in float64,
    the same expression pretty_midi 0.2.11 uses, so times are bit-identical to note-seq's
    whenever both read the same tempo changes.
    """

    def __init__(self, start_ticks: np.ndarray, base_seconds: np.ndarray, seconds_per_tick: np.ndarray):
        self.start_ticks = start_ticks  # (K,) int64, ascending, start_ticks[0] == 0
        self.base_seconds = base_seconds  # (K,) float64
        self.seconds_per_tick = seconds_per_tick  # (K,) float64

    @classmethod
    def from_tempo_changes(
        cls, ticks_per_quarter: int, ticks: np.ndarray, tempos: np.ndarray
    ) -> TempoMap:
        """Build the map from set_tempo events (ticks ascending, tempos in microseconds per quarter).

        Follows pretty_midi: the tempo starts at 120 bpm, a change at tick 0 replaces it,
        and a change that gives the same seconds-per-tick as the previous segment is skipped.
        """
        starts = [0]
        scales = [60.0 / (120.0 * ticks_per_quarter)]
        for tick, tempo in zip(ticks.tolist(), tempos.tolist()):
            scale = 60.0 / ((6e7 / tempo) * ticks_per_quarter)
            if tick == 0:
                scales = [scale]
            elif scale != scales[-1]:
                starts.append(tick)
                scales.append(scale)

        bases = [0.0]
        for k in range(1, len(starts)):
            bases.append(bases[-1] + scales[k - 1] * float(starts[k] - starts[k - 1]))
        return cls(
            np.asarray(starts, dtype=np.int64),
            np.asarray(bases, dtype=np.float64),
            np.asarray(scales, dtype=np.float64),
        )

    @classmethod
    def from_smpte(cls, frames_per_second: float, ticks_per_frame: int) -> TempoMap:
        """Build the fixed map of an SMPTE time division; tempo events do not apply."""
        scale = 1.0 / (frames_per_second * ticks_per_frame)
        return cls(np.zeros(1, np.int64), np.zeros(1, np.float64), np.full(1, scale))

    def seconds(self, ticks: np.ndarray) -> np.ndarray:
        """Seconds of each tick; (N,) int64 -> (N,) float64."""
        ticks = np.asarray(ticks, dtype=np.int64)
        segment = np.searchsorted(self.start_ticks, ticks, side="right") - 1
        offset = (ticks - self.start_ticks[segment]).astype(np.float64)
        return self.base_seconds[segment] + self.seconds_per_tick[segment] * offset


@dataclasses.dataclass(frozen=True)
class SmfContents:
    """Parsed contents of one Standard MIDI File: channel events, track ends and tempo map."""

    format: int  # 0, 1 or 2
    num_tracks: int  # MTrk chunks read
    events: ChannelEvents
    track_end_ticks: np.ndarray  # (num_tracks,) int64, tick of each track's last event
    tempo_map: TempoMap
    smpte: bool  # SMPTE time division: fixed ticks per second, tempo events ignored
    riff_wrapped: bool  # the SMF came inside a RIFF RMID container
    tempo_tracks: tuple[int, ...]  # indices of the tracks with set_tempo events
    invalid_tempo_events: int  # set_tempo events with tempo 0 or a length other than 3, ignored


def read_smf(path: str | os.PathLike) -> SmfContents:
    """Read and parse one file; every failure, I/O included, raises `MidiReadError`."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        raise MidiReadError(path, "file not found") from None
    except IsADirectoryError:
        raise MidiReadError(path, "is a directory, not a MIDI file") from None
    except OSError as error:
        raise MidiReadError(path, f"cannot read the file: {error.strerror or error}") from None
    return parse_smf(data, path)


def parse_smf(data: bytes, path: str | os.PathLike = "<bytes>") -> SmfContents:
    """Parse the bytes of a Standard MIDI File (or of a RIFF RMID file around one)."""
    riff_wrapped = data[:4] == b"RIFF"
    if riff_wrapped:
        data = _unwrap_riff(data, path)
    format_, declared_tracks, division, first_chunk = _parse_header(data, path)

    starts: list[int] = []  # byte offset of each event's delta time
    statuses: list[int] = []  # status of each event (see _scan_track)
    data_starts: list[int] = []  # byte offset of each event's first data byte
    track_event_starts = []
    track_chunk_ends = []
    for track, (chunk_start, chunk_end) in enumerate(_track_chunks(data, first_chunk, declared_tracks, path)):
        track_event_starts.append(len(starts))
        track_chunk_ends.append(chunk_end)
        try:
            _scan_track(data, chunk_start, chunk_end, starts, statuses, data_starts)
        except IndexError:
            raise MidiReadError(path, f"unexpected end of data in track {track + 1}") from None
        except _MalformedTrack as error:
            raise MidiReadError(path, f"{error} in track {track + 1}") from None
    num_tracks = len(track_event_starts)

    # Decode delta times and data bytes for all events at once.
    padded = np.frombuffer(data + bytes(_MAX_VLQ_BYTES), dtype=np.uint8)
    starts_array = np.asarray(starts, dtype=np.int64)
    status_array = np.asarray(statuses, dtype=np.int32)
    data_array = np.asarray(data_starts, dtype=np.int64)
    event_track = _event_tracks(track_event_starts, len(starts), num_tracks)
    ticks = _absolute_ticks(padded, starts_array, event_track, track_event_starts, path)

    events = _channel_events(padded, status_array, data_array, event_track, ticks, path)
    event_ends, track_end_ticks = _event_ends(starts_array, ticks, track_event_starts, track_chunk_ends)
    tempo_map, tempo_tracks, invalid_tempo_events, smpte = _tempo_map(
        padded, division, status_array, data_array, event_ends, event_track, ticks, path
    )
    return SmfContents(
        format=format_,
        num_tracks=num_tracks,
        events=events,
        track_end_ticks=track_end_ticks,
        tempo_map=tempo_map,
        smpte=smpte,
        riff_wrapped=riff_wrapped,
        tempo_tracks=tempo_tracks,
        invalid_tempo_events=invalid_tempo_events,
    )


class _MalformedTrack(Exception):
    """A structural error inside one track; the caller adds the file and track number."""


def _unwrap_riff(data: bytes, path) -> bytes:
    """Return the SMF inside a RIFF RMID file (chunk "data")."""
    if len(data) < 12:
        raise MidiReadError(path, "unexpected end of data in the RIFF header")
    form = data[8:12]
    if form != b"RMID":
        raise MidiReadError(path, f"not a MIDI file: RIFF file of type {form.decode('latin-1')!r}, not 'RMID'")
    position = 12
    while position + 8 <= len(data):
        chunk_id = data[position : position + 4]
        size = int.from_bytes(data[position + 4 : position + 8], "little")
        body = position + 8
        if chunk_id == b"data":
            if body + size > len(data):
                raise MidiReadError(path, "unexpected end of data in the RIFF data chunk")
            return data[body : body + size]
        position = body + size + (size & 1)  # RIFF chunks are padded to an even length
    raise MidiReadError(path, "RIFF RMID file without a 'data' chunk")


def _parse_header(data: bytes, path) -> tuple[int, int, int, int]:
    """Return (format, declared track count, division, offset of the first chunk after MThd)."""
    if not data:
        raise MidiReadError(path, "empty file")
    if data[:4] != b"MThd":
        raise MidiReadError(path, "not a MIDI file: no MThd header")
    if len(data) < 14:
        raise MidiReadError(path, "unexpected end of data in the MThd header")
    header_length = int.from_bytes(data[4:8], "big")
    if header_length < 6:
        raise MidiReadError(path, f"invalid MThd header: length {header_length}, expected at least 6")
    format_ = int.from_bytes(data[8:10], "big")
    declared_tracks = int.from_bytes(data[10:12], "big")
    division = int.from_bytes(data[12:14], "big")
    if format_ > 2:
        raise MidiReadError(path, f"unsupported SMF format {format_}; formats 0, 1 and 2 exist")
    if division == 0:
        raise MidiReadError(path, "invalid time division: 0 ticks per quarter note")
    return format_, declared_tracks, division, 8 + header_length


def _track_chunks(data: bytes, position: int, declared_tracks: int, path):
    """Yield (start, end) byte offsets of the declared MTrk chunks, skipping unknown chunks."""
    found = 0
    while found < declared_tracks:
        if position + 8 > len(data):
            raise MidiReadError(
                path,
                f"unexpected end of data: the header declares {declared_tracks} tracks "
                f"but the file ends after {found}",
            )
        chunk_id = data[position : position + 4]
        size = int.from_bytes(data[position + 4 : position + 8], "big")
        body = position + 8
        if body + size > len(data):
            if chunk_id == b"MTrk":
                raise MidiReadError(
                    path,
                    f"unexpected end of data in track {found + 1}: the chunk declares {size} bytes "
                    f"but only {len(data) - body} remain",
                )
            raise MidiReadError(path, f"unexpected end of data in a {chunk_id!r} chunk after track {found}")
        if chunk_id == b"MTrk":
            found += 1
            yield body, body + size
        position = body + size


def _scan_track(data: bytes, position: int, end: int, starts: list, statuses: list, data_starts: list) -> None:
    """Append the start, status and data offset of every event in one track chunk.

    Statuses are 0x80-0xEF for channel messages (running status resolved), 0xF0 or 0xF7
    for system exclusive messages and 0x100 | type for meta events. Running status
    survives meta and system exclusive events, as in mido, so files that rely on it still
    read. Reading past the end of `data` raises IndexError, which the caller reports.
    """
    add_start = starts.append
    add_status = statuses.append
    add_data_start = data_starts.append
    running = 0
    while position < end:
        add_start(position)
        while data[position] > 0x7F:  # skip the delta time; decoded later with numpy
            position += 1
        position += 1
        status = data[position]
        if status < 0x80:
            if not running:
                raise _MalformedTrack(f"data byte 0x{status:02X} without a status byte at byte {position}")
            status = running
        else:
            position += 1
            if status >= 0xF0:
                if status == 0xFF:
                    status = _META | data[position]
                    position += 1
                elif status != 0xF0 and status != 0xF7:
                    raise _MalformedTrack(
                        f"invalid status byte 0x{status:02X} at byte {position - 1} "
                        "(system common and real-time messages cannot appear in a MIDI file)"
                    )
                length = 0
                for _ in range(_MAX_VLQ_BYTES):
                    byte = data[position]
                    position += 1
                    length = (length << 7) | (byte & 0x7F)
                    if byte < 0x80:
                        break
                else:
                    raise _MalformedTrack(f"invalid variable-length quantity at byte {position - 4}")
                add_status(status)
                add_data_start(position)
                position += length
                continue
            running = status
        add_status(status)
        add_data_start(position)
        position += 1 if 0xC0 <= status < 0xE0 else 2
    if position > end:
        raise _MalformedTrack("the last event runs past the end of the track chunk")


def _event_tracks(track_event_starts: list[int], num_events: int, num_tracks: int) -> np.ndarray:
    """Track index of every event; (E,) int32."""
    counts = np.diff(np.append(np.asarray(track_event_starts, dtype=np.int64), num_events))
    return np.repeat(np.arange(num_tracks, dtype=np.int32), counts)


def _event_ends(starts, ticks, track_event_starts, track_chunk_ends) -> tuple[np.ndarray, np.ndarray]:
    """Return where each event's bytes end, (E,) int64, and each track's last tick, (T,) int64.

    An event ends where the next event of its track starts. The last event of a track ends
    at the chunk end, because the scan rejects a last event that runs past it.
    """
    first = np.asarray(track_event_starts, dtype=np.int64)
    last = np.append(first[1:], len(starts)) - 1
    has_events = last >= first

    event_ends = np.append(starts[1:], 0)
    event_ends[last[has_events]] = np.asarray(track_chunk_ends, dtype=np.int64)[has_events]
    track_end_ticks = np.zeros(len(first), dtype=np.int64)
    track_end_ticks[has_events] = ticks[last[has_events]]
    return event_ends, track_end_ticks


def _absolute_ticks(padded, starts, event_track, track_event_starts, path) -> np.ndarray:
    """Decode every delta time (a variable-length quantity of at most 4 bytes) and sum per track."""
    if not len(starts):
        return np.zeros(0, dtype=np.int64)
    window = padded[starts[:, None] + np.arange(_MAX_VLQ_BYTES)]  # (E, 4) uint8
    continued = window > 0x7F
    num_bytes = 1 + np.cumprod(continued, axis=1).sum(axis=1)  # (E,), 5 means too long
    too_long = np.flatnonzero(num_bytes > _MAX_VLQ_BYTES)
    if len(too_long):
        event = too_long[0]
        raise MidiReadError(
            path,
            f"invalid delta time (longer than 4 bytes) at byte {starts[event]} in track {event_track[event] + 1}",
        )
    deltas = np.zeros(len(starts), dtype=np.int64)
    for k in range(_MAX_VLQ_BYTES):
        part = (deltas << 7) | (window[:, k] & 0x7F)
        deltas = np.where(k < num_bytes, part, deltas)

    # Absolute ticks restart at 0 in every track.
    totals = np.cumsum(deltas)
    first = np.asarray(track_event_starts, dtype=np.int64)
    before_track = np.where(first > 0, totals[np.maximum(first - 1, 0)], 0)
    return totals - before_track[event_track]


def _channel_events(padded, statuses, data_starts, event_track, ticks, path) -> ChannelEvents:
    """Select the channel messages and read their data bytes; data bytes must be below 0x80."""
    channel = np.flatnonzero(statuses < 0xF0)
    status = statuses[channel].astype(np.uint8)
    first = data_starts[channel]
    data1 = padded[first]
    two_bytes = (status < 0xC0) | (status >= 0xE0)
    data2 = np.where(two_bytes, padded[first + 1], 0).astype(np.uint8)

    bad = np.flatnonzero((data1 > 0x7F) | (data2 > 0x7F))
    if len(bad):
        event = bad[0]
        byte = data1[event] if data1[event] > 0x7F else data2[event]
        offset = first[event] if data1[event] > 0x7F else first[event] + 1
        raise MidiReadError(
            path,
            f"invalid data byte 0x{byte:02X} at byte {offset} in track {event_track[channel[event]] + 1} "
            f"(a status byte inside a message with status 0x{status[event]:02X})",
        )
    return ChannelEvents(
        track=event_track[channel],
        tick=ticks[channel],
        status=status,
        data1=data1,
        data2=data2,
    )


def _tempo_map(padded, division, statuses, data_starts, event_ends, event_track, ticks, path):
    """Build the tempo map from set_tempo events of every track (the tempo map is global)."""
    if division & 0x8000:
        # SMPTE division: the high byte is minus the frame rate, the low byte ticks per frame.
        frames = 256 - (division >> 8)
        ticks_per_frame = division & 0xFF
        frames_per_second = 30000 / 1001 if frames == 29 else float(frames)
        if ticks_per_frame == 0:
            raise MidiReadError(path, "invalid SMPTE time division: 0 ticks per frame")
        return TempoMap.from_smpte(frames_per_second, ticks_per_frame), (), 0, True

    tempo_events = np.flatnonzero(statuses == _META | _META_SET_TEMPO)
    lengths = event_ends[tempo_events] - data_starts[tempo_events]
    first = data_starts[tempo_events]
    tempos = (
        (padded[first].astype(np.int64) << 16)
        | (padded[first + 1].astype(np.int64) << 8)
        | padded[first + 2].astype(np.int64)
    )
    valid = (lengths == 3) & (tempos > 0)
    tempo_events, tempos = tempo_events[valid], tempos[valid]

    # Stable sort by tick keeps track order, then file order, for changes at the same tick.
    order = np.argsort(ticks[tempo_events], kind="stable")
    tempo_map = TempoMap.from_tempo_changes(division, ticks[tempo_events][order], tempos[order])
    tempo_tracks = tuple(np.unique(event_track[tempo_events]).tolist())
    return tempo_map, tempo_tracks, int((~valid).sum()), False
