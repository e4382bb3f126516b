"""Generate pieces from a trained run and write them as files: what `pact sample` does.

A request is checked completely before the model is loaded or anything is generated, so a
typo costs no compute. `SampleRequest.validate` checks the options alone. `prepare_samples`
then checks them against the run's config and tokenizer, reads the prime and checks its
length, and locates the audio renderer. Variations are generated in lockstep as one batch. Each is written as
`sample_<i>.mid` (the tokenizer's native format) in the output folder, with a piano roll
`sample_<i>.png` and, on request, audio `sample_<i>.wav`. The numbers continue after the
samples already in the folder. Every file is written under a temporary name and then renamed, so an
interrupted run leaves only complete files.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pact.errors import ConfigError, RenderError
from pact.sampling import SamplingConfig

log = logging.getLogger(__name__)

EOS_ID = 1
# A cap on events when the length is given in seconds: dense piano passages reach about 100
# events per second (notes on and off, velocities, shifts), so 150 leaves headroom.
MAX_EVENTS_PER_SECOND = 150
DEFAULT_EVENTS = 1024
# Files that `write_outputs` numbers: sample_3.mid, sample_3.png, sample_3.wav, ...
_SAMPLE_NAME = re.compile(r"sample_(\d+)\.[A-Za-z0-9]+")


@dataclasses.dataclass(frozen=True)
class SampleRequest:
    num_samples: int = 1
    """Variations, generated together as one batch."""
    num_events: int | None = None
    """Length of each continuation in events (tokens); exclusive with `seconds`."""
    seconds: float | None = None
    """Length of each continuation in seconds of music; exclusive with `num_events`."""
    prime: Path | None = None
    """A file to continue; None samples from the start of a new piece."""
    prime_seconds: float | None = None
    """Use only the first seconds of the prime."""
    include_prime: bool = True
    """Write the prime before the continuation in each output file."""
    seed: int = 0
    sampling: SamplingConfig = SamplingConfig()
    use_cache: bool = True
    num_latents: int | None = None
    """Latents to sample with (the cache capacity); None uses the run's trained latents."""
    constrain: bool = True
    """Draw only valid events, such as NOTE_OFFs of sounding keys (the tokenizer's `paired_events`)."""
    piano_roll: bool = True
    """Write a piano-roll PNG beside each MIDI file."""
    render: bool = False
    """Render each MIDI file to a WAV file with FluidSynth."""
    soundfont: Path | None = None
    """General MIDI soundfont for `render`; None searches the usual paths."""

    def validate(self) -> None:
        """Raise `ConfigError` for an option value or combination that is invalid on its own."""
        if self.num_samples < 1:
            raise ConfigError(f"--num-samples={self.num_samples} is invalid: generate at least 1 sample")
        if self.num_events is not None and self.seconds is not None:
            raise ConfigError("--events and --seconds both set: give the length in one unit only")
        if self.num_events is not None and self.num_events < 1:
            raise ConfigError(f"--events={self.num_events} is invalid: use 1 or more events")
        if self.seconds is not None and not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ConfigError(f"--seconds={self.seconds} is invalid: use a finite length above 0 s")
        if self.prime_seconds is not None:
            if self.prime is None:
                raise ConfigError("--prime-seconds needs --prime FILE to take the seconds from")
            if not (math.isfinite(self.prime_seconds) and self.prime_seconds > 0):
                raise ConfigError(
                    f"--prime-seconds={self.prime_seconds} is invalid: use a finite length above 0 s"
                )
        if self.prime is not None and not Path(self.prime).is_file():
            reason = "is a directory, not a file" if Path(self.prime).is_dir() else "not found"
            raise ConfigError(f"prime file {self.prime} {reason}")
        if self.num_latents is not None and self.num_latents < 1:
            raise ConfigError(
                f"--latents={self.num_latents} is invalid: use 1 or more latents, at most the run's trained latents"
            )
        if self.soundfont is not None and not self.render:
            raise ConfigError("--soundfont is set without --render: add --render to write WAV files")


@dataclasses.dataclass(frozen=True)
class SamplePlan:
    """A request checked against the run, with everything read before the model loads."""

    config: Any  # pact.config.Config of the run
    tokenizer: Any  # pact.encodings.Tokenizer of the run
    prompt: np.ndarray  # (P,) int32: EOS, then the prime's events
    notices: list[str]  # what the reader merged, dropped or repaired in the prime
    max_tokens: int  # events generated at most per variation
    num_latents: int
    continuation_start: float | None  # seconds where the continuation starts in written files
    renderer: Any  # pact.render.Renderer, or None without --render


@dataclasses.dataclass
class SampleOutput:
    path: Path  # the generated piece in the tokenizer's format (MIDI for performances)
    prime_events: int
    events: int  # generated events, after the prime
    seconds: float | None  # length of the written piece, prime included when it is written
    notes: int | None
    piano_roll: Path | None = None
    audio: Path | None = None


@dataclasses.dataclass
class SampleRun:
    outputs: list[SampleOutput]
    notices: list[str]
    prime_events: int
    tokens_per_second: float  # generated events per second of decoding, summed over variations
    seconds: float  # decoding time
    step: int
    compile_seconds: float = 0.0
    first_event_seconds: float = 0.0  # the prime pass, whose logits give the first event
    num_latents: int = 0


def prime_ids(tokenizer, request: SampleRequest) -> tuple[np.ndarray, list[str]]:
    """Prompt ids ([EOS] then the prime's events) and notices about how the prime was read."""
    if request.prime is None:
        return np.array([EOS_ID], np.int32), []
    item = tokenizer.read(request.prime)
    notices = tokenizer.notices(item)
    ids = tokenizer.encode(item)
    if request.prime_seconds is not None:
        ids = _require(tokenizer, "truncate_ids", "--prime-seconds")(ids, request.prime_seconds)
    return np.concatenate([[EOS_ID], ids]).astype(np.int32), notices


def _require(tokenizer, method: str, option: str) -> Callable:
    function = getattr(tokenizer, method, None)
    if function is None:
        raise ConfigError(
            f"{option} needs a tokenizer with a notion of time; {tokenizer.name!r} has none, "
            "so give the length in events with --events"
        )
    return function


def prepare_samples(run_dir: str | os.PathLike | None, request: SampleRequest) -> SamplePlan:
    """Check `request` against the run without loading the model; raise a `PactError` if it cannot run.

    Reads the run's config and tokenizer, and the prime. Locates FluidSynth and a soundfont
    when the request renders audio.
    """
    from pact.encodings import tokenizer_from_spec
    from pact.run import RunDir, resolve_run_dir

    request.validate()
    run = RunDir(resolve_run_dir(run_dir)).require()
    config = run.read_config()
    tokenizer = tokenizer_from_spec(run.read_tokenizer_spec(), source=f"run {run.path}")
    model_config = config.model

    # 1. Latents: at most those the model was trained with.
    num_latents = model_config.num_latents if request.num_latents is None else request.num_latents
    if num_latents > model_config.num_latents:
        raise ConfigError(
            f"--latents={num_latents} is invalid: the run was trained with {model_config.num_latents} "
            f"latents, so use 1 to {model_config.num_latents}"
        )

    # 2. Length in events.
    if request.seconds is not None:
        _require(tokenizer, "duration_seconds", "--seconds")
        max_tokens = int(request.seconds * MAX_EVENTS_PER_SECOND) + 1
    else:
        max_tokens = request.num_events or DEFAULT_EVENTS

    # 3. The prime, which must fit the context together with the start token.
    prompt, notices = prime_ids(tokenizer, request)
    _check_prime_fits(tokenizer, prompt[1:], model_config.max_context, request.prime)
    continuation_start = None
    if request.prime is not None and request.include_prime and hasattr(tokenizer, "duration_seconds"):
        continuation_start = tokenizer.duration_seconds(prompt[1:])

    # 4. Audio: the program and soundfont must exist before any compute is spent.
    renderer = None
    if request.render:
        from pact.render import find_renderer

        if ".mid" not in tokenizer.file_suffixes:
            raise RenderError(
                f"--render needs a run that generates MIDI; run {run.path} uses the {tokenizer.name!r} tokenizer"
            )
        renderer = find_renderer(request.soundfont)

    return SamplePlan(
        config=config, tokenizer=tokenizer, prompt=prompt, notices=notices, max_tokens=max_tokens,
        num_latents=num_latents, continuation_start=continuation_start, renderer=renderer,
    )


def _check_prime_fits(tokenizer, ids: np.ndarray, context: int, prime: Path | None) -> None:
    """Raise `ConfigError` when the prime's events and the start token exceed the model's context."""
    limit = context - 1
    if len(ids) <= limit:
        return
    message = (
        f"the prime {prime} is {len(ids)} events long, but the model's context is {context} events, "
        f"so at most {limit} prime events fit after the start token"
    )
    duration = getattr(tokenizer, "duration_seconds", None)
    if duration is None:
        raise ConfigError(f"{message}; use a shorter prime")
    # The first `limit` events end at this time, so `truncate_ids` keeps at most those.
    fitting_seconds = math.floor(duration(ids[:limit]) * 100) / 100
    if fitting_seconds <= 0:
        raise ConfigError(f"{message}; use a shorter prime")
    raise ConfigError(
        f"{message}; use --prime-seconds {fitting_seconds:.2f} or less "
        f"(the prime used is {duration(ids):.2f} s long)"
    )


def generate_samples(run_dir: str | os.PathLike | None, out_dir: str | os.PathLike, request: SampleRequest, *,
                     step: int | None = None,
                     on_progress: Callable[[int, int], None] | None = None,
                     on_notice: Callable[[str], None] | None = None) -> SampleRun:
    """Generate `request.num_samples` pieces from the run (None: the bundled model) into `out_dir`.

    `on_notice(text)` receives the reader's notices about the prime before the model loads;
    without it they are logged. `on_progress(done, total)` reports generated events per
    variation, and ends with done == total.
    """
    from pact.run import load_model
    from pact.sampler import Sampler

    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder: give a folder for the samples")
    plan = prepare_samples(run_dir, request)
    for notice in plan.notices:
        if on_notice is not None:
            on_notice(notice)
        else:
            log.info("prime %s: %s", request.prime, notice)

    # 1. Model and compiled sampler.
    loaded = load_model(run_dir, step=step)
    log.info("loaded %s at step %d", "the bundled model" if run_dir is None else f"run {run_dir}", loaded.step)
    paired_events = loaded.tokenizer.paired_events() if request.constrain else None
    sampler = Sampler(loaded.model, request.sampling, use_cache=request.use_cache, num_latents=plan.num_latents,
                      paired_events=paired_events)
    _, _, compile_seconds = sampler.compiled(request.num_samples)
    log.info("compiled the sampler for %d variation(s) with %d latents in %.1f s",
             request.num_samples, plan.num_latents, compile_seconds)

    # 2. Generate. With a length in seconds, stop once every variation has reached it.
    tokenizer = plan.tokenizer

    def long_enough(tokens: np.ndarray) -> bool:
        return all(tokenizer.duration_seconds(row[row > 1]) >= request.seconds for row in tokens)

    result = sampler.generate(
        plan.prompt, num_tokens=plan.max_tokens, num_variations=request.num_samples, seed=request.seed,
        should_stop=long_enough if request.seconds is not None else None,
        on_chunk=(lambda done: on_progress(done, plan.max_tokens)) if on_progress else None,
    )
    if on_progress is not None:
        on_progress(result.tokens.shape[1], result.tokens.shape[1])
    log.info("prime pass %.2f s; %d events per variation in %.1f s",
             result.prime_seconds, result.tokens.shape[1], result.decode_seconds)

    # 3. Files.
    outputs = write_outputs(plan, request, result.tokens, result.lengths, Path(out_dir))
    return SampleRun(
        outputs=outputs, notices=plan.notices, prime_events=len(plan.prompt) - 1,
        tokens_per_second=result.tokens_per_second, seconds=result.decode_seconds, step=loaded.step,
        compile_seconds=compile_seconds, first_event_seconds=result.prime_seconds,
        num_latents=plan.num_latents,
    )


def write_outputs(plan: SamplePlan, request: SampleRequest, tokens: np.ndarray, lengths: np.ndarray,
                  out_dir: Path) -> list[SampleOutput]:
    """Write each variation's piece, then the piano rolls, then the audio; all atomically.

    `tokens` [B, S] are the generated ids and `lengths` [B] the ids up to and including EOS.
    The pieces come first because they are the result that matters if a later step fails or
    is interrupted. Numbering continues after the folder's existing samples, so sampling into
    one folder again adds files and never replaces earlier ones.
    """
    from pact.encodings.midi import Notes, read_midi

    tokenizer = plan.tokenizer
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = tokenizer.file_suffixes[0]
    first_index = _next_sample_index(out_dir)

    # 1. The pieces. Notes are read back from each written MIDI file, so that the summary and
    #    the piano roll show what the file plays. A MIDI file cannot keep two notes of one
    #    pitch that start together, so the writer drops one of them.
    outputs, items = [], []
    for index, (row, length) in enumerate(zip(tokens, lengths)):
        continuation = row[:length]
        continuation = continuation[continuation != EOS_ID]
        if request.seconds is not None:
            continuation = tokenizer.truncate_ids(continuation, request.seconds)
        ids = np.concatenate([plan.prompt[1:], continuation]) if request.include_prime else continuation
        path = out_dir / f"sample_{first_index + index}{suffix}"
        item = tokenizer.decode_to_file(ids, path)
        if isinstance(item, Notes):
            item = read_midi(path).notes
        items.append(item)
        outputs.append(SampleOutput(path, len(plan.prompt) - 1, len(continuation), _seconds(tokenizer, item, ids),
                                    len(item) if hasattr(item, "__len__") else None))
        log.info("wrote %s (%d events)", path, len(ids))

    # 2. Piano rolls, for tokenizers that decode to notes.
    if request.piano_roll:
        from pact.piano_roll import write_piano_roll

        for output, item in zip(outputs, items):
            if isinstance(item, Notes):
                output.piano_roll = write_piano_roll(
                    item, output.path.with_suffix(".png"), title=output.path.name,
                    prime_seconds=plan.continuation_start,
                )

    # 3. Audio.
    if plan.renderer is not None:
        for output in outputs:
            output.audio = plan.renderer.render(output.path, output.path.with_suffix(".wav")).path
            log.info("rendered %s", output.audio)
    return outputs


def _next_sample_index(out_dir: Path) -> int:
    """Return one more than the highest N of the `sample_N.*` files in `out_dir`, or 0 if it has none."""
    highest = -1
    for path in out_dir.iterdir():
        match = _SAMPLE_NAME.fullmatch(path.name)
        if match:
            highest = max(highest, int(match.group(1)))
    return highest + 1


def _seconds(tokenizer, item, ids: np.ndarray) -> float | None:
    """Length of a written piece: its last note's end, else the tokenizer's time for the ids."""
    duration = getattr(item, "duration", None)
    if isinstance(duration, float):
        return duration
    if hasattr(tokenizer, "duration_seconds"):
        return tokenizer.duration_seconds(ids)
    return None
