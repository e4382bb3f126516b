"""`pact quickstart`: encode, train and sample on the bundled performances."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pact.cli import _output


def quickstart(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the dataset, run and samples.")] = Path("quickstart"),
    steps: Annotated[int, typer.Option(min=1, help="Training steps of the tiny model (about 0.2 s each on 2 cores).")] = 300,
    seconds: Annotated[float, typer.Option(min=1.0, help="Length of the continuation in seconds.")] = 20.0,
) -> None:
    """Encode the bundled piano performances, train a tiny model on them and continue one."""
    from pact.quickstart import run_quickstart

    result = run_quickstart(out, steps=steps, sample_seconds=seconds, progress=_output.show_progress())
    _output.stdout.print(f"Dataset:  {result.dataset}")
    _output.stdout.print(f"Run:      {result.run_dir} ({result.train_seconds:.0f} s of training"
                         + (f", validation NLL {result.validation_nll:.3f} nats/event)" if result.validation_nll else ")"))
    for path in result.samples:
        _output.stdout.print(f"Sample:   {path}")
    _output.stdout.print(
        f"Next: pact sample {result.run_dir} --prime YOUR_SONG.mid --out samples, "
        f"or train longer with pact train {result.run_dir} --steps 2000"
    )
