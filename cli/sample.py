"""`pact sample`: generate new pieces, or continue a MIDI file, from a trained run or the bundled model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from pact.cli import _output

EXAMPLES = """
Examples:

  pact sample --prime song.mid --out samples      # the bundled piano model

  pact sample runs/maestro --out samples

  pact sample runs/maestro --prime song.mid --prime-seconds 20 --seconds 30 --num-samples 4

  pact sample runs/maestro --out greedy --temperature 0 --events 500

  pact sample runs/maestro --render --soundfont /usr/share/sounds/sf2/FluidR3_GM.sf2
"""


def sample(
    run_dir: Annotated[Path | None, typer.Argument(
        help="Run directory written by `pact train`, or a model written by `pact export`. "
             "Default: the piano model bundled with pact.")] = None,
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Folder for the generated files. Numbering continues after the sample_N files "
                            "already there, so earlier samples are kept.")] = Path("samples"),
    prime: Annotated[Path | None, typer.Option(
        help="MIDI file to continue (any file the encoder reads: several tracks and instruments "
             "are merged). It must fit the model's context (2,048 events for the bundled model, "
             "about a minute of piano): cut a longer one with --prime-seconds. Default: start a "
             "new piece.")] = None,
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
    constrain: Annotated[bool, typer.Option(
        "--constrain/--no-constrain",
        help="Draw only events that are valid where they fall: no NOTE_OFF of a key that is not down. "
             "The model's chance of releasing a key is kept and shared among the keys that are down.")] = True,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed and options give the same output.")] = 0,
    include_prime: Annotated[bool, typer.Option(
        "--include-prime/--no-include-prime", help="Write the prime before the continuation.")] = True,
    no_cache: Annotated[bool, typer.Option(
        "--no-cache", help="Run a full forward pass per event instead of the key/value cache "
                           "(same output, much slower; for checking).")] = False,
    step: Annotated[int | None, typer.Option(help="Checkpoint step; default: the newest.")] = None,
    latents: Annotated[int | None, typer.Option(
        "--latents", help="Latents to sample with, from 1 to the number the model was trained with "
                          "(the default): fewer are faster and may sound worse.")] = None,
    piano_roll: Annotated[bool, typer.Option(
        "--piano-roll/--no-piano-roll", help="Write a piano-roll PNG beside each MIDI file.")] = True,
    render: Annotated[bool, typer.Option(
        "--render", help="Also write a WAV file per sample, rendered with the fluidsynth program.")] = False,
    soundfont: Annotated[Path | None, typer.Option(
        help="General MIDI .sf2 soundfont for --render. Default: the first found of the usual system "
             "soundfonts, else the TimGM6mb.sf2 that pretty_midi ships.")] = None,
) -> None:
    """Generate pieces from a trained run or the bundled model: new ones, or continuations of --prime."""
    from pact.generate import SampleRequest, generate_samples
    from pact.sampling import SamplingConfig

    if events is None and seconds is None:
        seconds = 30.0
    request = SampleRequest(
        num_samples=num_samples, num_events=events, seconds=seconds, prime=prime,
        prime_seconds=prime_seconds, include_prime=include_prime, seed=seed,
        sampling=SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                allow_eos=allow_end),
        use_cache=not no_cache, num_latents=latents, constrain=constrain, piano_roll=piano_roll,
        render=render, soundfont=soundfont,
    )
    request.validate()

    def print_notice(notice: str) -> None:
        _output.stderr.print(f"[yellow]Notice:[/yellow] {escape(notice)}", soft_wrap=True)

    # The bar counts events over all variations, so its speed is the total events per second.
    with _output.progress_bar(None, "sampling", unit="events", show_speed=True) as bar:
        run = generate_samples(
            run_dir, out, request, step=step, on_notice=print_notice,
            on_progress=lambda done, total: bar.update(done * num_samples, total * num_samples),
        )
    _print_summary(run)


def _print_summary(run) -> None:
    from rich import box
    from rich.table import Table

    folder = run.outputs[0].path.parent if run.outputs else ""
    table = Table(title=f"{len(run.outputs)} sample(s) from step {run.step}", box=box.SIMPLE_HEAD)
    table.add_column("file", no_wrap=True)
    table.add_column("seconds", justify="right")
    table.add_column("notes", justify="right")
    table.add_column("events (prime + new)", justify="right")
    table.add_column("piano roll", no_wrap=True)
    table.add_column("audio", no_wrap=True)
    for output in run.outputs:
        table.add_row(
            output.path.name,
            "-" if output.seconds is None else f"{output.seconds:.1f}",
            "-" if output.notes is None else str(output.notes),
            f"{output.prime_events} + {output.events}",
            "-" if output.piano_roll is None else output.piano_roll.name,
            "-" if output.audio is None else output.audio.name,
        )
    _output.stdout.print(table)
    _output.stdout.print(f"Written to {folder}", soft_wrap=True)
    _output.stdout.print(
        f"Compiled in {run.compile_seconds:.1f} s. First event {run.first_event_seconds:.2f} s after "
        f"priming started. {run.tokens_per_second:,.0f} events/s over {len(run.outputs)} variation(s) "
        f"with {run.num_latents} latents ({run.seconds:.1f} s of decoding).",
        soft_wrap=True,
    )
