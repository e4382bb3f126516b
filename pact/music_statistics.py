"""Musical statistics of a set of MIDI files, and distances between two sets (`pact eval samples`).

Every file is read with `pact.encodings.midi.read_midi`, the reader of the performance
tokenizer: all tracks merged, sustain pedal applied, drum notes dropped. Per piece:

    notes            number of notes
    note density     notes per second, from the first onset to the last note end
    pitch classes    count of notes per pitch class (C, C#, ..., B)
    velocities       MIDI velocity (1-127) of every note
    inter-onset      seconds between consecutive onsets; onsets are first rounded to 10 ms,
    intervals        the time step of the performance encoding, so a chord is one onset
    polyphony        mean number of notes sounding, over the time when at least one sounds
                     (summed note durations divided by the length of their union)

A set pools pitch classes, velocities and inter-onset intervals over all its notes, and
keeps note density and polyphony per piece. The distances between two sets:

    pitch_class_distance      total variation distance between the pooled pitch-class
                              histograms: 1 minus their overlapping area, from 0 to 1
    velocity_distance         1-D Wasserstein distance between the pooled velocities,
                              in MIDI velocity units
    ioi_distance              1-D Wasserstein distance between the pooled inter-onset
                              intervals, in seconds
    note_density_distance     1-D Wasserstein distance between the pieces' note densities,
                              in notes per second
    polyphony_distance        1-D Wasserstein distance between the pieces' polyphony, in notes

0 means identical distributions for each of them. The 1-D Wasserstein (earth mover's)
distance is the area between the two empirical cumulative distribution functions, as
`scipy.stats.wasserstein_distance` computes it without weights.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from pact.encodings.midi import Notes, read_midi
from pact.errors import DatasetError, PactError

logger = logging.getLogger(__name__)

MIDI_SUFFIXES = (".mid", ".midi", ".kar", ".rmi")
PITCH_CLASS_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
ONSET_STEP_SECONDS = 0.01

DISTANCE_UNITS = {
    "pitch_class_distance": "total variation, 0-1",
    "velocity_distance": "velocity units",
    "ioi_distance": "seconds",
    "note_density_distance": "notes per second",
    "polyphony_distance": "notes",
}


@dataclasses.dataclass(frozen=True)
class PieceStatistics:
    """Statistics of one MIDI file with at least one note."""

    notes: int
    seconds: float  # from the first onset to the last note end
    note_density: float | None  # notes per second; None when all notes start and end at one instant
    pitch_class_counts: np.ndarray  # (12,) int64
    velocities: np.ndarray  # (notes,) int16
    inter_onset_intervals: np.ndarray  # (distinct onsets - 1,) float64 seconds
    polyphony: float | None  # mean notes sounding; None when every note has zero length


@dataclasses.dataclass(frozen=True)
class SetStatistics:
    """Statistics of a folder of MIDI files."""

    folder: str
    pieces: list[PieceStatistics]
    empty_files: list[str]  # readable files without notes
    unreadable_files: list[tuple[str, str]]  # (file, reason)

    @property
    def pitch_class_histogram(self) -> np.ndarray:
        """Fraction of all notes in each pitch class, (12,) float64."""
        counts = np.sum([piece.pitch_class_counts for piece in self.pieces], axis=0)
        return counts / max(counts.sum(), 1)

    @property
    def velocities(self) -> np.ndarray:
        return np.concatenate([piece.velocities for piece in self.pieces]).astype(np.float64)

    @property
    def inter_onset_intervals(self) -> np.ndarray:
        return np.concatenate([piece.inter_onset_intervals for piece in self.pieces])

    @property
    def note_densities(self) -> np.ndarray:
        return np.asarray([piece.note_density for piece in self.pieces if piece.note_density is not None])

    @property
    def polyphonies(self) -> np.ndarray:
        return np.asarray([piece.polyphony for piece in self.pieces if piece.polyphony is not None])

    def summary(self) -> dict[str, Any]:
        """Return the set's numbers for printing and JSON."""
        velocities = self.velocities
        intervals = self.inter_onset_intervals
        return {
            "folder": self.folder,
            "pieces": len(self.pieces),
            "empty_files": self.empty_files,
            "unreadable_files": [{"file": name, "reason": reason} for name, reason in self.unreadable_files],
            "notes": int(sum(piece.notes for piece in self.pieces)),
            "pitch_class_histogram": dict(zip(PITCH_CLASS_NAMES, self.pitch_class_histogram.round(6).tolist())),
            "note_density_mean": _mean(self.note_densities),
            "velocity_mean": _mean(velocities),
            "velocity_std": float(velocities.std()) if velocities.size else None,
            "ioi_median": float(np.median(intervals)) if intervals.size else None,
            "ioi_mean": _mean(intervals),
            "polyphony_mean": _mean(self.polyphonies),
        }


def piece_statistics(notes: Notes) -> PieceStatistics | None:
    """Compute the statistics of one piece (definitions in the module docstring); None without notes."""
    if not len(notes):
        return None
    first_onset = float(notes.start.min())
    last_end = float(notes.end.max())
    seconds = last_end - first_onset

    onset_steps = np.unique(np.floor(notes.start / ONSET_STEP_SECONDS + 0.5).astype(np.int64))
    intervals = np.diff(onset_steps) * ONSET_STEP_SECONDS

    durations = notes.end - notes.start
    sounding = _union_length(notes.start, notes.end)
    return PieceStatistics(
        notes=len(notes),
        seconds=seconds,
        note_density=len(notes) / seconds if seconds > 0 else None,
        pitch_class_counts=np.bincount(notes.pitch.astype(np.int64) % 12, minlength=12),
        velocities=notes.velocity.copy(),
        inter_onset_intervals=intervals,
        polyphony=float(durations.sum() / sounding) if sounding > 0 else None,
    )


def _union_length(starts: np.ndarray, ends: np.ndarray) -> float:
    """Total length of the union of the intervals [start, end)."""
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    # Each interval adds what reaches past the furthest end of the intervals before it.
    reach = np.maximum.accumulate(np.concatenate([[starts[0]], ends]))[:-1]
    return float(np.sum(np.clip(ends - np.maximum(starts, reach), 0.0, None)))


def collect_statistics(folder: str | os.PathLike) -> SetStatistics:
    """Read every MIDI file under `folder` (recursively) and compute its statistics.

    Unreadable files are listed with the reason and left out. Raises `DatasetError` when the
    folder does not exist or has no MIDI file with notes.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder of MIDI files")
    paths = sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in MIDI_SUFFIXES and path.is_file() and not path.name.startswith(".")
    )
    if not paths:
        raise DatasetError(f"no MIDI files ({', '.join(MIDI_SUFFIXES)}) found in {folder}")

    pieces, empty, unreadable = [], [], []
    for path in paths:
        name = path.relative_to(folder).as_posix()
        try:
            notes = read_midi(path).notes
        except PactError as error:
            logger.info("skipped %s: %s", path, error)
            unreadable.append((name, getattr(error, "reason", str(error))))
            continue
        statistics = piece_statistics(notes)
        if statistics is None:
            empty.append(name)
        else:
            pieces.append(statistics)

    if not pieces:
        raise DatasetError(
            f"none of the {len(paths)} MIDI files in {folder} has notes "
            f"({len(empty)} empty, {len(unreadable)} unreadable)"
        )
    return SetStatistics(folder=str(folder), pieces=pieces, empty_files=empty, unreadable_files=unreadable)


def wasserstein_distance(first: np.ndarray, second: np.ndarray) -> float | None:
    """Return the 1-D Wasserstein distance between two samples, or None if either is empty.

    It integrates |F(x) - G(x)| over x, where F and G are the empirical cumulative
    distribution functions, which are constant between consecutive pooled values. pact
    computes it here because importing scipy.stats takes seconds.
    """
    if not first.size or not second.size:
        return None
    first, second = np.sort(first), np.sort(second)
    values = np.sort(np.concatenate([first, second]))
    first_cdf = np.searchsorted(first, values[:-1], side="right") / first.size
    second_cdf = np.searchsorted(second, values[:-1], side="right") / second.size
    return float(np.sum(np.abs(first_cdf - second_cdf) * np.diff(values)))


def set_distances(samples: SetStatistics, reference: SetStatistics) -> dict[str, float | None]:
    """Distances between two sets (definitions in the module docstring); None where a set has no values."""
    overlap = np.minimum(samples.pitch_class_histogram, reference.pitch_class_histogram).sum()
    return {
        "pitch_class_distance": float(1.0 - overlap),
        "velocity_distance": wasserstein_distance(samples.velocities, reference.velocities),
        "ioi_distance": wasserstein_distance(samples.inter_onset_intervals, reference.inter_onset_intervals),
        "note_density_distance": wasserstein_distance(samples.note_densities, reference.note_densities),
        "polyphony_distance": wasserstein_distance(samples.polyphonies, reference.polyphonies),
    }


@dataclasses.dataclass(frozen=True)
class SetComparison:
    """Statistics of generated samples and of a reference set, and the distances between them."""

    samples: SetStatistics
    reference: SetStatistics
    distances: dict[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples.summary(),
            "reference": self.reference.summary(),
            "distances": self.distances,
        }


def compare_folders(samples_dir: str | os.PathLike, reference_dir: str | os.PathLike) -> SetComparison:
    """Compute the statistics of both folders and the distances between them."""
    samples = collect_statistics(samples_dir)
    reference = collect_statistics(reference_dir)
    return SetComparison(samples, reference, set_distances(samples, reference))


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None
