"""PNG figures of evaluation results, drawn with matplotlib's object API (no pyplot, no display).

Each figure is written to a temporary file beside the target and renamed into place, so an
existing figure is never left half-written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pact.errors import ConfigError


def plot_position_buckets(metrics: dict[str, Any], path: str | os.PathLike) -> Path:
    """Draw loss in bits per target against the target's position in the document.

    `metrics` is the dict of `pact eval benchmark` (`EvalResult.to_dict()` plus the run and
    step). Each point is one position bucket (0-512, 512-1024, ...), so a curve that falls to
    the right shows that the model uses long context.
    """
    from matplotlib.figure import Figure

    buckets = metrics["buckets"]
    unit = metrics.get("token_unit", "token")
    figure = Figure(figsize=(7, 4.2), layout="constrained")
    axes = figure.subplots()

    labels = [f"{_short_count(bucket['start'])}-{_short_count(bucket['end'])}" for bucket in buckets]
    bits = [bucket["bits"] for bucket in buckets]
    axes.plot(range(len(buckets)), bits, marker="o", label=f"bits per {unit} in the bucket")
    axes.axhline(metrics["bits"], color="grey", linestyle="--", linewidth=1, label=f"all targets: {metrics['bits']:.3f}")
    axes.set_xticks(range(len(buckets)), labels, rotation=30, ha="right")
    axes.set_xlabel("position of the target in its document")
    axes.set_ylabel(f"NLL (bits per {unit})")
    axes.set_title(_title(metrics))
    axes.grid(True, alpha=0.3)
    axes.legend()
    return save_figure(figure, path)


def save_figure(figure, path: str | os.PathLike) -> Path:
    """Write `figure` as a PNG file at `path` through a temporary file and a rename."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"plot file {path} must end in .png")
    if not path.parent.is_dir():
        raise ConfigError(f"folder {path.parent} of the plot file does not exist; create it first")
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}.png")
    try:
        figure.savefig(temporary, dpi=120)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _title(metrics: dict[str, Any]) -> str:
    run = Path(str(metrics.get("run_dir", ""))).name or "model"
    step = f" step {metrics['step']}" if metrics.get("step") is not None else ""
    return f"{run}{step} on {metrics['split']}: loss by position ({metrics['num_latents']} latents)"


def _short_count(value: int) -> str:
    """512 -> "512", 2048 -> "2k", 1048576 -> "1M"."""
    if value >= 1 << 20 and value % (1 << 20) == 0:
        return f"{value >> 20}M"
    if value >= 1024 and value % 1024 == 0:
        return f"{value >> 10}k"
    return str(value)


def plot_set_comparison(comparison, path: str | os.PathLike) -> Path:
    """Draw the statistics of generated samples beside those of a reference set.

    `comparison` is a `pact.music_statistics.SetComparison`. Panels: pitch-class histograms,
    velocity and inter-onset-interval distributions, and note density and polyphony per piece.
    """
    import numpy as np
    from matplotlib.figure import Figure

    from pact.music_statistics import PITCH_CLASS_NAMES

    sets = [("samples", comparison.samples, "tab:orange"), ("reference", comparison.reference, "tab:blue")]
    figure = Figure(figsize=(11, 7.5), layout="constrained")
    (pitch_axes, velocity_axes), (ioi_axes, piece_axes) = figure.subplots(2, 2)

    width = 0.4
    for offset, (label, statistics, color) in zip((-width / 2, width / 2), sets):
        pitch_axes.bar(np.arange(12) + offset, statistics.pitch_class_histogram, width, label=label, color=color)
    pitch_axes.set_xticks(range(12), PITCH_CLASS_NAMES)
    pitch_axes.set_ylabel("fraction of notes")
    pitch_axes.set_title(f"pitch classes (distance {comparison.distances['pitch_class_distance']:.3f})")

    velocity_bins = np.arange(0.5, 128.5, 4)
    # Intervals are multiples of 10 ms: log-spaced bin edges halfway between multiples, so
    # that no bin is empty for lack of a multiple inside it.
    interval_bins = (np.unique(np.round(np.geomspace(1, 1000, 40))) - 0.5) * 0.01
    for label, statistics, color in sets:
        velocities = statistics.velocities
        intervals = np.clip(statistics.inter_onset_intervals, 0.01, 10.0)
        velocity_axes.hist(velocities, bins=velocity_bins, weights=np.full(velocities.size, 1 / max(velocities.size, 1)),
                           histtype="step", linewidth=1.5, label=label, color=color)
        ioi_axes.hist(intervals, bins=interval_bins, weights=np.full(intervals.size, 1 / max(intervals.size, 1)),
                      histtype="step", linewidth=1.5, label=label, color=color)
    velocity_axes.set_ylabel("fraction of notes")
    ioi_axes.set_ylabel("fraction of intervals")
    velocity_axes.set_xlabel("MIDI velocity")
    velocity_axes.set_title(f"velocities (distance {_format(comparison.distances['velocity_distance'])})")
    ioi_axes.set_xscale("log")
    ioi_axes.set_xlabel("inter-onset interval (s), clipped to 0.01-10 s")
    ioi_axes.set_title(f"inter-onset intervals (distance {_format(comparison.distances['ioi_distance'])} s)")

    values = [statistics.note_densities for _, statistics, _ in sets] + [
        statistics.polyphonies for _, statistics, _ in sets
    ]
    labels = [f"density\n{label}" for label, _, _ in sets] + [f"polyphony\n{label}" for label, _, _ in sets]
    piece_axes.boxplot([value if value.size else [np.nan] for value in values], tick_labels=labels)
    piece_axes.set_ylabel("notes per second / notes sounding")
    piece_axes.set_title("per piece: note density and polyphony")

    for axes in (pitch_axes, velocity_axes, ioi_axes):
        axes.legend()
    return save_figure(figure, path)


def _format(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
