"""Magenta's performance encoding: MIDI <-> NOTE_ON / NOTE_OFF / TIME_SHIFT / VELOCITY ids.

Id layout with the defaults (the tensor2tensor score2perf layout with 2 reserved ids):

    0         PAD
    1         EOS
    2-129     NOTE_ON_0 .. NOTE_ON_127
    130-257   NOTE_OFF_0 .. NOTE_OFF_127
    258-357   TIME_SHIFT_1 .. TIME_SHIFT_100   (steps of 10 ms)
    358-389   VELOCITY_1 .. VELOCITY_32

so id = 2 + note-seq's `PerformanceOneHotEncoding` index. The options move the ranges:
`min_pitch`/`max_pitch` size the NOTE_ON and NOTE_OFF ranges, `max_shift_steps` the
TIME_SHIFT range and `velocity_bins` the VELOCITY range (0 leaves it out).

Encoding matches note-seq 0.0.5's `Performance` (see docs/encoding.md for where the
reader departs from `midi_file_to_note_sequence`):

* Absolute times are quantized, never deltas: step = floor(seconds * steps_per_second + 0.5).
  A note whose end step equals its start step lasts one step.
* Notes are ordered by (start seconds, pitch). At each step all NOTE_OFFs come first,
  then the NOTE_ONs, each group in that note order. A VELOCITY precedes a NOTE_ON whenever
  the bin differs from the previous NOTE_ON's. Gaps become TIME_SHIFTs of at most
  `max_shift_steps`. Nothing follows the last NOTE_OFF.
* Velocity bin = (velocity - 1) // size + 1 with size = ceil(127 / velocity_bins), which
  is (v - 1) // 4 + 1 for 32 bins; bin b decodes to 1 + size * (b - 1).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from pact.encodings.base import NUM_RESERVED_IDS, PairedEvents, Tokenizer
from pact.encodings.midi import MidiPerformance, Notes, count_of, pair_note_events, read_midi, write_midi
from pact.errors import ConfigError, TokenizerError

# Velocity of NOTE_ONs decoded before any VELOCITY id (note-seq's `to_sequence` default).
DEFAULT_VELOCITY = 100

# Event types of the lookup tables built for decoding.
_PAD, _EOS, _NOTE_ON, _NOTE_OFF, _TIME_SHIFT, _VELOCITY = range(6)


@dataclasses.dataclass(frozen=True)
class DecodeReport:
    """Ids that `decode` ignored or repaired."""

    stray_note_offs: int = 0  # NOTE_OFF with no sounding note of that pitch
    unclosed_notes: int = 0  # NOTE_ON never closed, ended at the last step
    zero_length_notes: int = 0  # NOTE_OFF at the step of its NOTE_ON, dropped as note-seq does

    def notices(self) -> list[str]:
        """Return one sentence per kind of repair, for printing."""
        notices = []
        if self.stray_note_offs:
            notices.append(f"ignored {count_of(self.stray_note_offs, 'NOTE_OFF')} without a sounding note")
        if self.unclosed_notes:
            notices.append(f"closed {count_of(self.unclosed_notes, 'note')} still open at the end")
        if self.zero_length_notes:
            notices.append(f"dropped {count_of(self.zero_length_notes, 'note')} that ended where it started")
        return notices


class PerformanceTokenizer(Tokenizer):
    """MIDI performances as Magenta performance events (layout in the module docstring)."""

    name = "performance"
    version = "1"
    file_suffixes = (".mid", ".midi", ".kar", ".rmi")
    modality = "music"
    token_unit = "event"

    def __init__(
        self,
        velocity_bins: int = 32,
        max_shift_steps: int = 100,
        steps_per_second: int = 100,
        include_drums: bool = False,
        min_pitch: int = 0,
        max_pitch: int = 127,
    ):
        _check_option("velocity_bins", velocity_bins, 0, 127)
        _check_option("max_shift_steps", max_shift_steps, 1, 10_000)
        _check_option("steps_per_second", steps_per_second, 1, 1000)
        _check_option("min_pitch", min_pitch, 0, 127)
        _check_option("max_pitch", max_pitch, min_pitch, 127)
        if not isinstance(include_drums, bool):
            raise ConfigError(f"include_drums must be true or false, got {include_drums!r}")
        self.velocity_bins = velocity_bins
        self.max_shift_steps = max_shift_steps
        self.steps_per_second = steps_per_second
        self.include_drums = include_drums
        self.min_pitch = min_pitch
        self.max_pitch = max_pitch

        num_pitches = max_pitch - min_pitch + 1
        self.note_on_offset = NUM_RESERVED_IDS
        self.note_off_offset = self.note_on_offset + num_pitches
        self.time_shift_offset = self.note_off_offset + num_pitches
        self.velocity_offset = self.time_shift_offset + max_shift_steps
        self._vocab_size = self.velocity_offset + velocity_bins
        # Velocities per bin; note-seq's bin size for 1..127.
        self.velocity_bin_size = math.ceil(127 / velocity_bins) if velocity_bins else 0
        self._event_type, self._event_value = self._lookup_tables()

    # Interface.

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def options(self) -> dict[str, Any]:
        return {
            "velocity_bins": self.velocity_bins,
            "max_shift_steps": self.max_shift_steps,
            "steps_per_second": self.steps_per_second,
            "include_drums": self.include_drums,
            "min_pitch": self.min_pitch,
            "max_pitch": self.max_pitch,
        }

    def paired_events(self) -> PairedEvents:
        """NOTE_ON of pitch p opens slot p - min_pitch and NOTE_OFF of p closes it."""
        num_pitches = self.max_pitch - self.min_pitch + 1
        slots = np.arange(num_pitches, dtype=np.int32)
        opens = np.full(self.vocab_size, -1, np.int32)
        closes = np.full(self.vocab_size, -1, np.int32)
        opens[self.note_on_offset:self.note_on_offset + num_pitches] = slots
        closes[self.note_off_offset:self.note_off_offset + num_pitches] = slots
        return PairedEvents(opens=opens, closes=closes, num_slots=num_pitches)

    def read(self, path: str | os.PathLike) -> MidiPerformance:
        """Read a MIDI file with this tokenizer's drum and pitch-range options."""
        return read_midi(path, include_drums=self.include_drums, min_pitch=self.min_pitch, max_pitch=self.max_pitch)

    def notices(self, item: MidiPerformance | Notes) -> list[str]:
        """Return the reader's notices about a file: merged tracks, dropped or closed notes."""
        return item.report.notices() if isinstance(item, MidiPerformance) else []

    def encode(self, item: MidiPerformance | Notes) -> np.ndarray:
        """Encode notes as a 1-D int32 array of ids, without EOS."""
        notes = item.notes if isinstance(item, MidiPerformance) else item
        if not len(notes):
            return np.zeros(0, dtype=np.int32)
        self._check_pitches(notes)
        steps = self._event_steps(notes)
        return self._assemble_ids(*steps)

    def decode(self, ids: Sequence[int] | np.ndarray) -> Notes:
        """Decode ids into notes on channel 0; see `decode_with_report`."""
        return self.decode_with_report(ids)[0]

    def decode_with_report(self, ids: Sequence[int] | np.ndarray) -> tuple[Notes, DecodeReport]:
        """Decode ids into notes and count what was repaired.

        Never raises for ids in [0, vocab_size). PAD is skipped and decoding stops at the
        first EOS. A NOTE_OFF with no sounding note is ignored, and two NOTE_ONs of one
        pitch close first in, first out. A NOTE_ON never closed ends at the last step, and
        a NOTE_ON before any VELOCITY gets velocity 100. A note that ends at the step where
        it started is dropped, as note-seq drops it. Raises `TokenizerError` for ids
        outside the vocabulary.
        """
        event_type, event_value = self._classify(ids)
        step_after = np.cumsum(np.where(event_type == _TIME_SHIFT, event_value, 0))
        final_step = int(step_after[-1]) if len(step_after) else 0
        velocity = self._velocities(event_type, event_value)

        is_on = event_type == _NOTE_ON
        is_off = event_type == _NOTE_OFF
        zeros = np.zeros(len(event_type), dtype=np.int64)
        pairs = pair_note_events(zeros, zeros, event_value, is_on, is_off)
        unclosed = pairs.off_event < 0
        start_step = step_after[pairs.on_event]
        end_step = np.where(unclosed, final_step, step_after[np.maximum(pairs.off_event, 0)])
        keep = end_step > start_step

        seconds_per_step = 1.0 / self.steps_per_second
        start = start_step[keep] * seconds_per_step
        pitch = event_value[pairs.on_event][keep]
        order = np.lexsort((pairs.on_event[keep], pitch, start))
        notes = Notes.from_arrays(
            start=start[order],
            end=(end_step[keep] * seconds_per_step)[order],
            pitch=pitch[order],
            velocity=velocity[pairs.on_event][keep][order],
        )
        report = DecodeReport(
            stray_note_offs=pairs.stray_note_offs,
            unclosed_notes=int((unclosed & keep).sum()),
            zero_length_notes=int((~keep).sum()),
        )
        return notes, report

    def write(self, item: MidiPerformance | Notes, path: str | os.PathLike) -> None:
        """Write notes as a one-track piano MIDI file (see `pact.encodings.midi.write_midi`)."""
        write_midi(item.notes if isinstance(item, MidiPerformance) else item, path)

    # Token names.

    def id_to_token(self, token_id: int) -> str:
        """Name of one id: PAD, EOS, NOTE_ON_60, NOTE_OFF_60, TIME_SHIFT_50 or VELOCITY_25."""
        token_id = int(token_id)
        if not 0 <= token_id < self.vocab_size:
            raise TokenizerError(f"id {token_id} is outside the vocabulary [0, {self.vocab_size}) of {self.name!r}")
        names = ("PAD", "EOS", "NOTE_ON", "NOTE_OFF", "TIME_SHIFT", "VELOCITY")
        event_type = int(self._event_type[token_id])
        if event_type in (_PAD, _EOS):
            return names[event_type]
        return f"{names[event_type]}_{int(self._event_value[token_id])}"

    def token_to_id(self, token: str) -> int:
        """Id of a name written by `id_to_token`; raises `TokenizerError` for other names."""
        if token == "PAD":
            return self.pad_id
        if token == "EOS":
            return self.eos_id
        kind, _, value_text = token.rpartition("_")
        ranges = {
            "NOTE_ON": (self.note_on_offset, self.min_pitch, self.max_pitch),
            "NOTE_OFF": (self.note_off_offset, self.min_pitch, self.max_pitch),
            "TIME_SHIFT": (self.time_shift_offset, 1, self.max_shift_steps),
            "VELOCITY": (self.velocity_offset, 1, self.velocity_bins),
        }
        if kind not in ranges or not value_text.isdigit():
            raise TokenizerError(
                f"unknown token {token!r}; expected PAD, EOS, NOTE_ON_<pitch>, NOTE_OFF_<pitch>, "
                "TIME_SHIFT_<steps> or VELOCITY_<bin>"
            )
        offset, low, high = ranges[kind]
        value = int(value_text)
        if not low <= value <= high:
            raise TokenizerError(f"token {token!r} is out of range: {kind} values go from {low} to {high} here")
        return offset + value - low

    # Helpers for sampling and printing.

    def duration_seconds(self, ids: Sequence[int] | np.ndarray) -> float:
        """Length in seconds of an id sequence: its TIME_SHIFT steps up to the first EOS."""
        event_type, event_value = self._classify(ids)
        steps = int(event_value[event_type == _TIME_SHIFT].sum())
        return steps / self.steps_per_second

    def truncate_ids(self, ids: Sequence[int] | np.ndarray, seconds: float) -> np.ndarray:
        """Return the ids of the first `seconds` seconds, for priming a sampler.

        Keeps every id of an event before step round(seconds * steps_per_second), and cuts
        a TIME_SHIFT that crosses that step so the result lasts exactly that long (or
        less, if the sequence is shorter). Notes still sounding at the cut stay open.
        PAD ids are dropped and the result stops before the first EOS.
        """
        if seconds < 0:
            raise ConfigError(f"the prime length must be at least 0 seconds, got {seconds}")
        event_type, event_value = self._classify(ids)
        kept_ids = self._ids_of(event_type, event_value)
        limit = round(seconds * self.steps_per_second)
        shift = np.where(event_type == _TIME_SHIFT, event_value, 0)
        step_before = np.cumsum(shift) - shift
        inside = step_before < limit
        result = kept_ids[inside]
        if len(result) and event_type[inside][-1] == _TIME_SHIFT:
            remaining = limit - int(step_before[inside][-1])
            if remaining < event_value[inside][-1]:
                result[-1] = self.time_shift_offset + remaining - 1
        return result

    def encode_file_prefix(self, path: str | os.PathLike, seconds: float) -> np.ndarray:
        """Encode the first `seconds` seconds of a MIDI file (see `truncate_ids`)."""
        return self.truncate_ids(self.encode_file(path), seconds)

    def velocity_to_bin(self, velocity: np.ndarray) -> np.ndarray:
        """Velocity bin of each MIDI velocity 1-127 (note-seq's rule)."""
        velocity = np.clip(np.asarray(velocity, dtype=np.int64), 1, 127)
        return (velocity - 1) // self.velocity_bin_size + 1

    def bin_to_velocity(self, velocity_bin: np.ndarray) -> np.ndarray:
        """MIDI velocity that a velocity bin decodes to: 1 + size * (bin - 1)."""
        return 1 + self.velocity_bin_size * (np.asarray(velocity_bin, dtype=np.int64) - 1)

    # Encoding steps.

    def _check_pitches(self, notes: Notes) -> None:
        outside = (notes.pitch < self.min_pitch) | (notes.pitch > self.max_pitch)
        if outside.any():
            pitch = int(notes.pitch[outside][0])
            raise TokenizerError(
                f"pitch {pitch} is outside this tokenizer's range {self.min_pitch}-{self.max_pitch}; "
                "read the file with the same tokenizer, which drops such notes, or widen the range"
            )

    def _event_steps(self, notes: Notes):
        """Note-on and note-off events in encoding order: (step, is_on, pitch, velocity bin), each (2N,)."""
        sps = self.steps_per_second
        # note-seq's quantize_to_step: int(seconds * steps_per_second + 0.5).
        start_step = (notes.start * sps + 0.5).astype(np.int64)
        end_step = (notes.end * sps + 0.5).astype(np.int64)
        end_step = np.where(end_step <= start_step, start_step + 1, end_step)

        order = np.lexsort((np.arange(len(notes)), notes.pitch, notes.start))
        rank = np.arange(len(notes))
        pitch = notes.pitch[order].astype(np.int64)
        velocity_bin = self.velocity_to_bin(notes.velocity[order]) if self.velocity_bins else np.zeros_like(pitch)

        # At one step every NOTE_OFF precedes every NOTE_ON: a note ending at step s
        # started before s, so it sorts before any note starting at s.
        step = np.concatenate([end_step[order], start_step[order]])
        is_on = np.concatenate([np.zeros(len(rank), bool), np.ones(len(rank), bool)])
        event_order = np.lexsort((np.concatenate([rank, rank]), is_on, step))
        return (
            step[event_order],
            is_on[event_order],
            np.concatenate([pitch, pitch])[event_order],
            np.concatenate([velocity_bin, velocity_bin])[event_order],
        )

    def _assemble_ids(self, step, is_on, pitch, velocity_bin) -> np.ndarray:
        """Lay out [TIME_SHIFT...] [VELOCITY] NOTE_ON|NOTE_OFF for each event; inputs (E,)."""
        max_shift = self.max_shift_steps
        gap = np.diff(step, prepend=0)
        num_shifts = -(-gap // max_shift)  # ceil(gap / max_shift)

        on_bins = velocity_bin[is_on]
        needs_velocity = np.zeros(len(step), dtype=bool)
        if self.velocity_bins:
            needs_velocity[is_on] = on_bins != np.concatenate([[0], on_bins[:-1]])

        count = num_shifts + needs_velocity + 1
        event_end = np.cumsum(count)
        event_begin = event_end - count
        ids = np.empty(int(event_end[-1]), dtype=np.int32)

        # TIME_SHIFTs: all of max_shift but the last, which takes the remainder.
        owner = np.repeat(np.arange(len(step)), num_shifts)
        index = np.arange(len(owner)) - np.repeat(np.cumsum(num_shifts) - num_shifts, num_shifts)
        last = index == num_shifts[owner] - 1
        value = np.where(last, gap[owner] - (num_shifts[owner] - 1) * max_shift, max_shift)
        ids[event_begin[owner] + index] = self.time_shift_offset + value - 1

        with_velocity = np.flatnonzero(needs_velocity)
        ids[event_begin[with_velocity] + num_shifts[with_velocity]] = (
            self.velocity_offset + velocity_bin[with_velocity] - 1
        )
        ids[event_end - 1] = np.where(is_on, self.note_on_offset, self.note_off_offset) + pitch - self.min_pitch
        return ids

    # Decoding steps.

    def _lookup_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """Event type and value of every id; (vocab_size,) int64 each."""
        event_type = np.empty(self._vocab_size, dtype=np.int64)
        event_value = np.zeros(self._vocab_size, dtype=np.int64)
        event_type[0], event_type[1] = _PAD, _EOS
        pitches = np.arange(self.min_pitch, self.max_pitch + 1)
        for kind, offset, values in (
            (_NOTE_ON, self.note_on_offset, pitches),
            (_NOTE_OFF, self.note_off_offset, pitches),
            (_TIME_SHIFT, self.time_shift_offset, np.arange(1, self.max_shift_steps + 1)),
            (_VELOCITY, self.velocity_offset, np.arange(1, self.velocity_bins + 1)),
        ):
            event_type[offset : offset + len(values)] = kind
            event_value[offset : offset + len(values)] = values
        return event_type, event_value

    def _classify(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """Event types and values of the ids before the first EOS, PAD removed; (M,) each."""
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise TokenizerError(f"expected a 1-D sequence of ids, got shape {ids.shape}")
        if len(ids) and not np.issubdtype(ids.dtype, np.integer):
            raise TokenizerError(f"expected integer ids, got {ids.dtype}")
        ids = ids.astype(np.int64)
        outside = (ids < 0) | (ids >= self._vocab_size)
        if outside.any():
            raise TokenizerError(
                f"id {int(ids[outside][0])} is outside the vocabulary [0, {self._vocab_size}) of "
                f"{self.name!r}; were these ids made by another tokenizer?"
            )
        event_type = self._event_type[ids]
        eos = np.flatnonzero(event_type == _EOS)
        if len(eos):
            ids, event_type = ids[: eos[0]], event_type[: eos[0]]
        not_pad = event_type != _PAD
        ids = ids[not_pad]
        return event_type[not_pad], self._event_value[ids]

    def _ids_of(self, event_type: np.ndarray, event_value: np.ndarray) -> np.ndarray:
        """Inverse of `_classify` for note and time events; (M,) -> (M,) int32."""
        offsets = np.zeros(6, dtype=np.int64)
        offsets[_NOTE_ON] = self.note_on_offset - self.min_pitch
        offsets[_NOTE_OFF] = self.note_off_offset - self.min_pitch
        offsets[_TIME_SHIFT] = self.time_shift_offset - 1
        offsets[_VELOCITY] = self.velocity_offset - 1
        return (offsets[event_type] + event_value).astype(np.int32)

    def _velocities(self, event_type: np.ndarray, event_value: np.ndarray) -> np.ndarray:
        """MIDI velocity in force at each event: the last VELOCITY before it, else 100; (M,)."""
        is_velocity = event_type == _VELOCITY
        last = np.maximum.accumulate(np.where(is_velocity, np.arange(len(event_type)), -1))
        if not self.velocity_bins:
            return np.full(len(event_type), DEFAULT_VELOCITY, dtype=np.int64)
        decoded = self.bin_to_velocity(event_value[np.maximum(last, 0)])
        return np.where(last >= 0, decoded, DEFAULT_VELOCITY)


def _check_option(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ConfigError(f"tokenizer option {name} must be an integer from {low} to {high}, got {value!r}")
