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
