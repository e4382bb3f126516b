"""`pact sample`: generate new pieces, or continue a MIDI file, from a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pact.cli import _output

EXAMPLES = """
Examples:

  pact sample runs/maestro --out samples

  pact sample runs/maestro --prime song.mid --prime-seconds 20 --seconds 30 --num-samples 4

  pact sample runs/maestro --out greedy --temperature 0 --events 500
"""


def sample(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `pact train`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the generated files.")] = Path("samples"),
    prime: Annotated[Path | None, typer.Option(
        help="MIDI file to continue (any file the encoder reads: several tracks and instruments "
             "are merged). Default: start a new piece.")] = None,
    prime_seconds: Annotated[float | None, typer.Option(
        help="Use only the first seconds of --prime.")] = None,
    num_samples: Annotated[int, typer.Option("--num-samples", "-n", help="Variations, generated together.")] = 1,
    events: Annotated[int | None, typer.Option(help="Length of each continuation in events.")] = None,
    seconds: Annotated[float | None, typer.Option(
        help="Length of each continuation in seconds of music (default 30 when --events is not given).")] = None,
    temperature: Annotated[float, typer.Option(
        help="Softmax temperature: below 1 is safer, above 1 wilder; 0 means greedy (always the most likely event).")] = 1.0,
    top_k: Annotated[int, typer.Option(help="Sample among the k most likely events only; 0 turns it off.")] = 0,
    top_p: Annotated[float, typer.Option(
        help="Nucleus sampling: the smallest set of events with at least this probability, in (0, 1]; 1 turns it off.")] = 1.0,
    min_p: Annotated[float, typer.Option(
        help="Drop events less likely than this fraction of the most likely one, in [0, 1); 0 turns it off.")] = 0.0,
    allow_end: Annotated[bool, typer.Option(
        "--allow-end", help="Let the model end a piece before the requested length.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed and options give the same output.")] = 0,
    include_prime: Annotated[bool, typer.Option(
        "--include-prime/--no-include-prime", help="Write the prime before the continuation.")] = True,
    no_cache: Annotated[bool, typer.Option(
        "--no-cache", help="Run a full forward pass per event instead of the key/value cache "
                           "(same output, much slower; for checking).")] = False,
    step: Annotated[int | None, typer.Option(help="Checkpoint step; default: the newest.")] = None,
) -> None:
    """Generate pieces from a trained run: new ones, or continuations of --prime."""
    from pact.generate import SampleRequest, generate_samples
    from pact.sampling import SamplingConfig

    if events is None and seconds is None:
        seconds = 30.0
    request = SampleRequest(
        num_samples=num_samples, num_events=events, seconds=seconds, prime=prime,
        prime_seconds=prime_seconds, include_prime=include_prime, seed=seed,
        sampling=SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                allow_eos=allow_end),
        use_cache=not no_cache,
    )
    request.validate()

    with _output.progress_bar(None, "sample", unit="events per variation") as bar:
        run = generate_samples(run_dir, out, request, step=step, on_progress=bar.update)

    for notice in run.notices:
        _output.stderr.print(f"[yellow]Notice:[/yellow] {notice}")
    _print_summary(run)


def _print_summary(run) -> None:
    from rich.table import Table

    folder = run.outputs[0].path.parent if run.outputs else ""
    table = Table(title=f"{len(run.outputs)} sample(s) from step {run.step}, "
                        f"{run.tokens_per_second:,.0f} events/s")
    table.add_column("file")
    table.add_column("prime events", justify="right")
    table.add_column("new events", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("notes", justify="right")
    for output in run.outputs:
        table.add_row(
            output.path.name, str(output.prime_events), str(output.events),
            "-" if output.seconds is None else f"{output.seconds:.1f}",
            "-" if output.notes is None else str(output.notes),
        )
    _output.stdout.print(table)
    _output.stdout.print(f"Written to {folder}", soft_wrap=True)
