"""`pact quickstart`: hear the bundled model continue a real performance, or run the whole workflow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from pact.cli import _output


def quickstart(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the output files.")] = Path("quickstart"),
    seconds: Annotated[float, typer.Option(min=1.0, help="Length of the continuation in seconds of music.")] = 20.0,
    prime_seconds: Annotated[float, typer.Option(
        min=0.5, help="Seconds of the bundled performance to continue from.")] = 10.0,
    train: Annotated[bool, typer.Option(
        "--train", help="Run the whole workflow instead: encode the bundled performances, train a tiny "
                        "model on them for --steps, and continue one with it.")] = False,
    steps: Annotated[int, typer.Option(
        min=1, help="With --train: training steps of the tiny model (about 0.2 s each on 2 cores).")] = 300,
) -> None:
    """Continue a bundled piano performance with the bundled model (or, with --train, a model you train).

    Writes OUT/sample_0.mid, its piano roll and, when FluidSynth is installed, a WAV file. A
    second run adds OUT/sample_1.mid and so on beside them.
    With --train it writes the dataset, the run and OUT/samples/sample_0.mid with its piano roll.
    """
    if train:
        _train_from_scratch(out, steps, seconds, prime_seconds)
        return

    from pact.quickstart import continue_prime

    with _output.progress_bar(None, "sampling", unit="events", show_speed=True) as bar:
        result = continue_prime(out, seconds=seconds, prime_seconds=prime_seconds,
                                on_progress=lambda done, total: bar.update(done, total))
    sample, run = result.sample, result.run
    _output.stdout.print(
        f"Continued the first {prime_seconds:g} s of {result.prime.name} (held out from the model's "
        f"training) for {seconds:g} s: {sample.events} new events in {run.seconds:.1f} s.",
        markup=False, soft_wrap=True,
    )
    _output.stdout.print(f"MIDI:        {sample.path}", markup=False, soft_wrap=True)
    if sample.piano_roll is not None:
        _output.stdout.print(f"Piano roll:  {sample.piano_roll}", markup=False, soft_wrap=True)
    if sample.audio is not None:
        _output.stdout.print(f"Audio:       {sample.audio}", markup=False, soft_wrap=True)
    else:
        _output.stderr.print(f"[yellow]No audio:[/yellow] {escape(result.audio_note or '')}", soft_wrap=True)
    _output.stdout.print(
        "Next: pact sample --prime YOUR_SONG.mid --out samples, or train your own with "
        "pact quickstart --train", markup=False, soft_wrap=True,
    )


def _train_from_scratch(out: Path, steps: int, seconds: float, prime_seconds: float) -> None:
    from pact.quickstart import train_from_scratch

    result = train_from_scratch(out, steps=steps, sample_seconds=seconds, prime_seconds=prime_seconds,
                                progress=_output.show_progress())
    _output.stdout.print(f"Dataset:  {result.dataset}", markup=False, soft_wrap=True)
    _output.stdout.print(f"Run:      {result.run_dir} ({result.train_seconds:.0f} s of training"
                         + (f", validation NLL {result.validation_nll:.3f} nats/event)" if result.validation_nll else ")"),
                         markup=False, soft_wrap=True)
    for path in result.samples:
        _output.stdout.print(f"Sample:   {path}", markup=False, soft_wrap=True)
    _output.stdout.print(
        f"Next: pact sample {result.run_dir} --prime YOUR_SONG.mid --out samples, "
        f"or train longer with pact train {result.run_dir} --steps 2000", markup=False, soft_wrap=True,
    )
