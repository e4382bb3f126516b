"""`pact export`: a run's parameters at one step as a small folder that samples and evaluates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pact.cli import _output


def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `pact train`.")],
    out: Annotated[Path, typer.Argument(help="Folder for the exported model; created if missing.")],
    step: Annotated[int | None, typer.Option(min=0, help="Checkpoint step; default: the newest.")] = None,
) -> None:
    """Write a run's parameters (float32, no optimizer state) with its config and tokenizer.

    The folder works wherever a run directory does for reading: pact sample, pact eval
    benchmark and pact info.
    """
    from pact.export import PARAMS_FILE, export_run

    info = export_run(run_dir, out, step=step)
    size = (out / PARAMS_FILE).stat().st_size / 1e6
    _output.stdout.print(
        f"Exported step {info['step']} of {run_dir} ({info['parameters']:,} parameters, {size:.1f} MB) to {out}",
        markup=False, soft_wrap=True,
    )
