"""Piano rolls of a real MAESTRO performance: the plotted data and the pixels of the PNG."""

import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from pact import piano_roll
from pact.encodings.midi import Notes
from pact.encodings.performance import PerformanceTokenizer

PRIME_SECONDS = 12.0
WHITE = (1.0, 1.0, 1.0)


@pytest.fixture(scope="module")
def performance(maestro_root) -> Notes:
    """The first 30 s of a real MAESTRO performance, decoded as `pact sample` decodes its output."""
    tokenizer = PerformanceTokenizer()
    # The largest of the first ten files, so the excerpt is dense rather than a slow opening.
    path = max(sorted(maestro_root.glob("*/*.midi"))[:10], key=lambda file: file.stat().st_size)
    return tokenizer.decode(tokenizer.truncate_ids(tokenizer.encode_file(path), 30.0))


def _pixel(image: np.ndarray, figure, seconds: float, pitch: float) -> np.ndarray:
    """RGB of the PNG pixel at data coordinates (seconds, pitch) of the figure's piano roll."""
    x, y = figure.axes[0].transData.transform((seconds, pitch))
    return image[int(round(image.shape[0] - y)), int(round(x)), :3]


def _empty_pitch(notes: Notes) -> int:
    """A low pitch row with no note at all, away from the labelled C rows and the legend."""
    used = set(notes.pitch.tolist())
    return next(p for p in range(piano_roll.PIANO_LOWEST + 1, 60) if p not in used and p % 12)


def test_pitch_names():
    assert piano_roll.pitch_name(60) == "C4"
    assert piano_roll.pitch_name(21) == "A0"
    assert piano_roll.pitch_name(108) == "C8"
    assert piano_roll.pitch_name(61) == "C#4"
    assert piano_roll.pitch_name(0) == "C-1"


def test_piano_roll_plots_every_note(performance):
    figure = piano_roll.draw_piano_roll(performance, title="real.mid", prime_seconds=PRIME_SECONDS)
    axes, colorbar = figure.axes
    bars = axes.collections[0]

    assert len(performance) > 100
    assert len(bars.get_paths()) == len(performance)
    np.testing.assert_array_equal(bars.get_array(), performance.velocity)
    first = bars.get_paths()[0].vertices
    assert first[:, 0].min() == pytest.approx(performance.start[0])
    assert first[:, 0].max() == pytest.approx(performance.end[0])
    assert (first[:, 1].min() + first[:, 1].max()) / 2 == pytest.approx(performance.pitch[0])

    assert axes.get_xlim() == pytest.approx((0.0, performance.duration))
    assert axes.get_ylim() == (piano_roll.PIANO_LOWEST - 0.5, piano_roll.PIANO_HIGHEST + 0.5)
    labels = [label.get_text() for label in axes.get_yticklabels()]
    assert labels == [f"C{octave}" for octave in range(1, 9)]
    assert axes.get_title().startswith("real.mid")
    assert axes.get_xlabel() == "time (s)"
    assert colorbar.get_ylabel() == "velocity"
    assert bars.norm.vmin == 1
    assert bars.norm.vmax == 127


def test_piano_roll_marks_prime(performance):
    figure = piano_roll.draw_piano_roll(performance, title="real.mid", prime_seconds=PRIME_SECONDS)
    axes = figure.axes[0]
    shaded = [patch for patch in axes.patches if patch.get_label() == "prime"]
    lines = [line for line in axes.lines if line.get_label().startswith("continuation")]

    assert len(shaded) == 1
    assert shaded[0].get_x() == 0.0
    assert shaded[0].get_x() + shaded[0].get_width() == PRIME_SECONDS
    assert len(lines) == 1
    assert list(lines[0].get_xdata()) == [PRIME_SECONDS, PRIME_SECONDS]


def test_piano_roll_without_prime_has_no_marks(performance):
    figure = piano_roll.draw_piano_roll(performance, title="new.mid")
    axes = figure.axes[0]
    assert not axes.patches
    assert not axes.lines
    assert axes.get_legend() is None


def test_piano_roll_png_pixels(performance, tmp_path):
    path = piano_roll.write_piano_roll(performance, tmp_path / "real.png", prime_seconds=PRIME_SECONDS)
    image = imread(path)
    figure = piano_roll.draw_piano_roll(performance, title="real.png", prime_seconds=PRIME_SECONDS)
    figure.canvas.draw()

    width, height = (int(inches * piano_roll.DPI) for inches in piano_roll.FIGURE_INCHES)
    assert image.shape[:2] == (height, width)
    assert list(tmp_path.iterdir()) == [path]

    # An empty pitch row: shaded inside the prime, white after it, the line between them.
    empty = _empty_pitch(performance)
    shade = float(piano_roll.PRIME_SHADE)
    np.testing.assert_allclose(_pixel(image, figure, PRIME_SECONDS / 2, empty), (shade,) * 3, atol=0.02)
    after = (PRIME_SECONDS + performance.duration) / 2
    np.testing.assert_allclose(_pixel(image, figure, after, empty), WHITE, atol=0.02)
    np.testing.assert_allclose(_pixel(image, figure, PRIME_SECONDS, empty),
                               to_rgb(piano_roll.CONTINUATION_LINE), atol=0.12)

    # The longest note away from the line and the legend has its velocity's colour.
    candidates = np.flatnonzero((performance.pitch < 90) & (np.abs(performance.start - PRIME_SECONDS) > 1.0)
                                & (np.abs(performance.end - PRIME_SECONDS) > 1.0))
    note = candidates[np.argmax(performance.end[candidates] - performance.start[candidates])]
    middle = (performance.start[note] + performance.end[note]) / 2
    expected = colormaps[piano_roll.COLOR_MAP]((performance.velocity[note] - 1) / 126)[:3]
    np.testing.assert_allclose(_pixel(image, figure, middle, performance.pitch[note]), expected, atol=0.03)

    # Notes cover a real share of the plot, and many distinct velocity colours appear.
    left, bottom = figure.axes[0].transData.transform((0, piano_roll.PIANO_LOWEST - 0.5))
    right, top = figure.axes[0].transData.transform((performance.duration, piano_roll.PIANO_HIGHEST + 0.5))
    plot = image[int(height - top) + 2:int(height - bottom) - 2, int(left) + 2:int(right) - 2, :3]
    coloured = np.abs(plot - plot.mean(axis=-1, keepdims=True)).max(axis=-1) > 0.1
    assert coloured.mean() > 0.01
    assert len(np.unique(np.round(plot[coloured], 1), axis=0)) > 10


def test_piano_roll_of_no_notes(tmp_path):
    path = piano_roll.write_piano_roll(Notes.empty(), tmp_path / "empty.png")
    assert imread(path).shape[0] == int(piano_roll.FIGURE_INCHES[1] * piano_roll.DPI)


def test_piano_roll_widens_for_notes_off_the_keyboard():
    notes = Notes.from_arrays([0.0, 0.5], [0.4, 1.0], [12, 120], [64, 64])
    axes = piano_roll.draw_piano_roll(notes, title="wide.mid").axes[0]
    assert axes.get_ylim() == (11.5, 120.5)
