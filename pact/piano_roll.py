"""Piano-roll pictures of performances: pitch against seconds, with velocity as colour.

Each note is a horizontal bar on the row of its MIDI pitch, coloured by its velocity (1-127,
explained by a colour bar). The pitch axis covers the 88 piano keys (A0 = 21 to C8 = 108),
widened to fit notes outside them, with a label at every C (C4 = 60 is middle C). When the
picture shows a prime followed by a continuation, the prime is shaded and a vertical line
marks where the continuation starts.

matplotlib is imported inside the functions and draws on its Agg canvas, so importing this
module is cheap and no display is needed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pact.atomic_files import atomic_output
from pact.encodings.midi import Notes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PIANO_LOWEST = 21  # A0
PIANO_HIGHEST = 108  # C8
FIGURE_INCHES = (12.0, 5.0)
DPI = 100
COLOR_MAP = "viridis"
PRIME_SHADE = "0.85"  # light grey behind the prime
CONTINUATION_LINE = "crimson"
BAR_HEIGHT = 0.8  # in pitch rows, so neighbouring pitches stay apart

_PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def pitch_name(pitch: int) -> str:
    """Return the scientific pitch name of a MIDI pitch: 60 -> "C4", 21 -> "A0"."""
    return f"{_PITCH_CLASSES[pitch % 12]}{pitch // 12 - 1}"


def pitch_limits(notes: Notes) -> tuple[int, int]:
    """Lowest and highest pitch row shown: the piano keys, widened to fit every note."""
    if not len(notes):
        return PIANO_LOWEST, PIANO_HIGHEST
    return min(PIANO_LOWEST, int(notes.pitch.min())), max(PIANO_HIGHEST, int(notes.pitch.max()))


def note_bars(notes: Notes) -> np.ndarray:
    """Corners of each note's bar in (seconds, pitch); (N, 4, 2) float64."""
    low = notes.pitch - BAR_HEIGHT / 2
    high = notes.pitch + BAR_HEIGHT / 2
    corners = [(notes.start, low), (notes.end, low), (notes.end, high), (notes.start, high)]
    return np.stack([np.stack(corner, axis=-1) for corner in corners], axis=1).astype(np.float64)


def draw_piano_roll(notes: Notes, *, title: str, prime_seconds: float | None = None) -> Figure:
    """Draw the notes as a piano roll and return the matplotlib figure.

    `prime_seconds`, when given and above 0, is where the continuation starts: the prime
    before it is shaded and a vertical line marks it.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGURE_INCHES, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()

    # 1. Notes as bars coloured by velocity. Edges in the face colour keep 10 ms notes visible.
    bars = PolyCollection(
        note_bars(notes), array=notes.velocity.astype(np.float64), cmap=COLOR_MAP,
        norm=Normalize(1, 127), edgecolors="face", linewidths=0.3, zorder=2,
    )
    axes.add_collection(bars)
    figure.colorbar(bars, ax=axes, label="velocity", pad=0.01)

    # 2. The prime: shaded, with a line where the continuation starts.
    end = notes.duration
    if prime_seconds is not None and prime_seconds > 0:
        axes.axvspan(0, prime_seconds, color=PRIME_SHADE, zorder=0, label="prime")
        axes.axvline(prime_seconds, color=CONTINUATION_LINE, linewidth=1.5, zorder=3,
                     label=f"continuation from {prime_seconds:.2f} s")
        axes.legend(loc="upper right", fontsize="small", framealpha=0.9)
        end = max(end, prime_seconds)

    # 3. Axes: seconds, and the piano's pitch range with a label at every C.
    low, high = pitch_limits(notes)
    axes.set_xlim(0, end if end > 0 else 1.0)
    axes.set_ylim(low - 0.5, high + 0.5)
    c_pitches = [pitch for pitch in range(low, high + 1) if pitch % 12 == 0]
    axes.set_yticks(c_pitches, [pitch_name(pitch) for pitch in c_pitches])
    axes.grid(axis="y", color="0.92", linewidth=0.8, zorder=1)
    axes.set_axisbelow(True)
    axes.set_xlabel("time (s)")
    axes.set_ylabel("pitch")
    axes.set_title(f"{title}: {notes.duration:.1f} s, {len(notes)} notes")
    return figure


def write_piano_roll(notes: Notes, path: str | os.PathLike, *, title: str | None = None,
                     prime_seconds: float | None = None) -> Path:
    """Draw the notes (see `draw_piano_roll`) and write the picture as a PNG, atomically.

    `title` defaults to the file name of `path`.
    """
    path = Path(path)
    figure = draw_piano_roll(notes, title=title or path.name, prime_seconds=prime_seconds)
    with atomic_output(path) as temporary:
        figure.savefig(temporary, format="png", dpi=DPI)
    return path
