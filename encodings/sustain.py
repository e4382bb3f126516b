"""The sustain pedal (CC64) rule of Magenta's `apply_sustain_control_changes`, vectorised.

Reference: note-seq 0.0.5, `sequences_lib.apply_sustain_control_changes`. That function
sorts note onsets, note releases and pedal changes by (time, kind) with the kinds ordered
pedal down < pedal up < onset < release, breaks remaining ties by sequence order, and
walks them once. Its outcome for one note n (pitch p, channel c, onset s, release e) is:

* n is *restruck* by the first later onset of p on c (later in that order) at which the
  pedal of c is down. If that onset comes while n still sounds, n ends there, and n is
  deleted when it would end at its own onset (two onsets at the same time).
* n sounds until its release if the pedal is up at the release. Otherwise it sounds until
  the first pedal-up event of c after the release. If the pedal never goes up again, n ends
  at the time of the last event of the whole sequence (Magenta's rule for a pedal that is
  never released, kept so that tokens match note-seq).

"The pedal is down at time x" means: the last pedal change at or before x, in the order
above, is a press (value >= 64). At one instant a release wins over a press.

All times here are integer ticks. Ticks map to seconds monotonically, so comparing ticks
gives the order of note-seq's seconds without rounding. NOTE: note-seq would also tie two
distinct ticks that round to one float64 second, which needs ticks far shorter than any
real tempo gives.
"""

from __future__ import annotations

import numpy as np


def apply_sustain(
    onset: np.ndarray,
    release: np.ndarray,
    pitch: np.ndarray,
    channel: np.ndarray,
    pedal_tick: np.ndarray,
    pedal_channel: np.ndarray,
    pedal_down: np.ndarray,
    last_tick: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Return the sounding end of every note and which notes survive.

    Notes come in sequence order: among onsets at the same tick, the earlier note counts
    as earlier in processing (pact passes notes in file order). Pedal arrays are the CC64 events of all
    channels in file order. `last_tick` is the time of the last onset, release or pedal
    event of the sequence.

    Shapes: notes (N,), pedal events (P,). Returns (end (N,) int64, keep (N,) bool).
    """
    num_notes = len(onset)
    if num_notes == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    onset = onset.astype(np.int64)
    release = release.astype(np.int64)
    channel = channel.astype(np.int64)
    pitch = pitch.astype(np.int64)

    # Pedal changes per channel, in processing order: (channel, tick, press before release).
    kind = np.where(pedal_down, 0, 1)
    order = np.lexsort((np.arange(len(pedal_tick)), kind, pedal_tick, pedal_channel))
    pedal_channel = pedal_channel[order].astype(np.int64)
    pedal_tick = pedal_tick[order].astype(np.int64)
    pedal_down = pedal_down[order]

    span = max(int(last_tick), int(release.max()), int(pedal_tick.max(initial=0))) + 1
    pedal_key = pedal_channel * span + pedal_tick

    down_at_release = _pedal_down_at(pedal_key, pedal_down, channel, release, span)
    down_at_onset = _pedal_down_at(pedal_key, pedal_down, channel, onset, span)

    # First pedal-up on the same channel strictly after the release.
    up_keys = pedal_key[~pedal_down]
    up_index = np.searchsorted(up_keys, channel * span + release, side="right")
    up_found = up_index < len(up_keys)
    up_key = up_keys[np.minimum(up_index, len(up_keys) - 1)] if len(up_keys) else np.zeros(num_notes, np.int64)
    up_found &= (up_key // span) == channel
    next_up = np.where(up_found, up_key % span, last_tick)

    # Without a restrike: the release, or the next pedal-up when the pedal held the note.
    sustained_end = np.where(down_at_release, next_up, release)

    # Restrikes: within each (channel, pitch), onsets in processing order; for each note
    # the next later onset at which the pedal is down.
    group_order = np.lexsort((np.arange(num_notes), onset, pitch, channel))
    group_channel = channel[group_order]
    group_pitch = pitch[group_order]
    flagged = down_at_onset[group_order]
    positions = np.arange(num_notes)
    next_flagged = np.where(flagged, positions, num_notes)
    next_flagged = np.minimum.accumulate(next_flagged[::-1])[::-1]  # first flagged at or after i
    next_flagged = np.append(next_flagged[1:], num_notes)  # first flagged strictly after i
    has_restrike = next_flagged < num_notes
    restrike = np.minimum(next_flagged, num_notes - 1)
    has_restrike &= (group_channel[restrike] == group_channel) & (group_pitch[restrike] == group_pitch)
    restrike_tick = np.where(has_restrike, onset[group_order][restrike], 0)

    # A restrike counts while the note still sounds: up to and including its release when
    # the pedal is up there (onsets sort before releases at one tick), or strictly before
    # the next pedal-up otherwise (pedal-ups sort before onsets).
    note_release = release[group_order]
    note_down = down_at_release[group_order]
    note_next_up = next_up[group_order]
    pedal_never_up = note_down & ~up_found[group_order]
    in_time = np.where(note_down, (restrike_tick < note_next_up) | pedal_never_up, restrike_tick <= note_release)
    applies = has_restrike & in_time

    end = sustained_end.copy()
    keep = np.ones(num_notes, dtype=bool)
    restruck = group_order[applies]
    end[restruck] = restrike_tick[applies]
    keep[restruck] = end[restruck] != onset[restruck]
    return end, keep


def _pedal_down_at(pedal_key, pedal_down, channel, tick, span) -> np.ndarray:
    """Return whether the pedal of `channel` is down after every change at or before `tick`.

    `pedal_key` is channel * span + tick of the sorted pedal changes; (N,) queries -> (N,) bool.
    """
    if not len(pedal_key):
        return np.zeros(len(tick), dtype=bool)
    index = np.searchsorted(pedal_key, channel * span + tick, side="right") - 1
    clipped = np.maximum(index, 0)
    same_channel = (index >= 0) & (pedal_key[clipped] // span == channel)
    return same_channel & pedal_down[clipped]
