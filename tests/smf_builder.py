"""Build Standard MIDI File bytes by hand, for reader tests that need exact byte layouts."""

from __future__ import annotations


def vlq(value: int) -> bytes:
    """Encode a variable-length quantity."""
    groups = [value & 0x7F]
    value >>= 7
    while value:
        groups.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(groups))


def track(*events: tuple[int, bytes], end_of_track: bool = True) -> bytes:
    """An MTrk chunk from (delta ticks, message bytes) pairs; End-of-Track appended by default."""
    body = b"".join(vlq(delta) + message for delta, message in events)
    if end_of_track:
        body += b"\x00\xff\x2f\x00"
    return chunk(b"MTrk", body)


def chunk(chunk_id: bytes, body: bytes, declared_length: int | None = None) -> bytes:
    length = len(body) if declared_length is None else declared_length
    return chunk_id + length.to_bytes(4, "big") + body


def header(num_tracks: int, division: int = 500, format_: int = 1, length: int = 6, extra: bytes = b"") -> bytes:
    body = format_.to_bytes(2, "big") + num_tracks.to_bytes(2, "big") + division.to_bytes(2, "big") + extra
    return b"MThd" + length.to_bytes(4, "big") + body


def smf(*tracks: bytes, division: int = 500, format_: int = 1) -> bytes:
    """A whole file: header plus the given MTrk chunks (default 500 ticks per quarter = 1 ms ticks)."""
    return header(len(tracks), division, format_) + b"".join(tracks)


def note_on(pitch: int, velocity: int = 100, channel: int = 0) -> bytes:
    return bytes((0x90 | channel, pitch, velocity))


def note_off(pitch: int, channel: int = 0) -> bytes:
    return bytes((0x80 | channel, pitch, 64))


def pedal(value: int, channel: int = 0) -> bytes:
    return bytes((0xB0 | channel, 64, value))


def program(number: int, channel: int = 0) -> bytes:
    return bytes((0xC0 | channel, number))


def tempo(microseconds_per_quarter: int) -> bytes:
    return b"\xff\x51\x03" + microseconds_per_quarter.to_bytes(3, "big")


def text(kind: int, value: bytes) -> bytes:
    """A meta event of the given type carrying text (1 text, 3 track name, 5 lyric)."""
    return bytes((0xFF, kind)) + vlq(len(value)) + value


def riff_rmid(smf_bytes: bytes) -> bytes:
    """Wrap an SMF in a RIFF RMID container with an extra INFO chunk before the data chunk."""
    info = b"LIST" + (4).to_bytes(4, "little") + b"INFO"
    data = b"data" + len(smf_bytes).to_bytes(4, "little") + smf_bytes + (b"\x00" if len(smf_bytes) % 2 else b"")
    body = b"RMID" + info + data
    return b"RIFF" + len(body).to_bytes(4, "little") + body
