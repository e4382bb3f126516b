"""Generate pieces from a trained run and write them as files: what `pact sample` does.

A request is checked completely (options, prime file, lengths) before the model is loaded or
anything is generated, so a typo costs no compute. Variations are generated in lockstep as one
batch; each is written as `sample_<i>.mid` (the tokenizer's native format) in the output folder.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pact.errors import ConfigError
from pact.sampling import SamplingConfig

log = logging.getLogger(__name__)

EOS_ID = 1
# A cap on events when the length is given in seconds: dense piano passages reach about 100
# events per second (notes on and off, velocities, shifts), so 150 leaves headroom.
MAX_EVENTS_PER_SECOND = 150


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

    def validate(self) -> None:
        if self.num_samples < 1:
            raise ConfigError(f"--num-samples={self.num_samples} is invalid: generate at least 1 sample")
        if self.num_events is not None and self.seconds is not None:
            raise ConfigError("--events and --seconds both set: give the length in one unit only")
        if self.num_events is not None and self.num_events < 1:
            raise ConfigError(f"--events={self.num_events} is invalid: use 1 or more events")
        if self.seconds is not None and self.seconds <= 0:
            raise ConfigError(f"--seconds={self.seconds} is invalid: use a length above 0 s")
        if self.prime_seconds is not None:
            if self.prime is None:
                raise ConfigError("--prime-seconds needs --prime FILE to take the seconds from")
            if self.prime_seconds <= 0:
                raise ConfigError(f"--prime-seconds={self.prime_seconds} is invalid: use a length above 0 s")
        if self.prime is not None and not Path(self.prime).is_file():
            raise ConfigError(f"prime file {self.prime} not found")


@dataclasses.dataclass
class SampleOutput:
    path: Path
    prime_events: int
    events: int
    seconds: float | None
    notes: int | None


@dataclasses.dataclass
class SampleRun:
    outputs: list[SampleOutput]
    notices: list[str]
    prime_events: int
    tokens_per_second: float
    seconds: float
    step: int


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


def generate_samples(run_dir: str | os.PathLike, out_dir: str | os.PathLike, request: SampleRequest, *,
                     step: int | None = None,
                     on_progress: Callable[[int, int], None] | None = None) -> SampleRun:
    """Generate `request.num_samples` pieces from the run and write them into `out_dir`.

    `on_progress(done, total)` reports generated tokens per variation.
    """
    from pact.run import load_model
    from pact.sampler import Sampler

    request.validate()
    loaded = load_model(run_dir, step=step)
    tokenizer, config = loaded.tokenizer, loaded.config.model

    # 1. Prompt, and the length in tokens.
    prompt, notices = prime_ids(tokenizer, request)
    if len(prompt) > config.max_context:
        raise ConfigError(
            f"the prime is {len(prompt) - 1} events long but the model's context is "
            f"{config.max_context} events; shorten it with --prime-seconds"
        )
    if request.seconds is not None:
        duration = _require(tokenizer, "duration_seconds", "--seconds")
        max_tokens = int(request.seconds * MAX_EVENTS_PER_SECOND) + 1
    else:
        max_tokens = request.num_events or 1024

    # 2. Generate. With a length in seconds, stop once every variation has reached it.
    def long_enough(tokens: np.ndarray) -> bool:
        return all(duration(row[row > 1]) >= request.seconds for row in tokens)

    sampler = Sampler(loaded.model, request.sampling, use_cache=request.use_cache)
    result = sampler.generate(
        prompt, num_tokens=max_tokens, num_variations=request.num_samples, seed=request.seed,
        should_stop=long_enough if request.seconds is not None else None,
        on_chunk=(lambda done: on_progress(done, max_tokens)) if on_progress else None,
    )
    log.info("compiled in %.1f s; prime pass %.2f s; %d events per variation in %.1f s",
             result.compile_seconds, result.prime_seconds, result.tokens.shape[1], result.decode_seconds)

    # 3. Write one file per variation.
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = tokenizer.file_suffixes[0]
    outputs = []
    for index, (row, length) in enumerate(zip(result.tokens, result.lengths)):
        continuation = row[:length]
        continuation = continuation[continuation != EOS_ID]
        if request.seconds is not None:
            continuation = tokenizer.truncate_ids(continuation, request.seconds)
        ids = np.concatenate([prompt[1:], continuation]) if request.include_prime else continuation
        path = out_dir / f"sample_{index}{suffix}"
        item = tokenizer.decode_to_file(ids, path)
        seconds = tokenizer.duration_seconds(ids) if hasattr(tokenizer, "duration_seconds") else None
        notes = len(item) if hasattr(item, "__len__") else None
        outputs.append(SampleOutput(path, len(prompt) - 1, len(continuation), seconds, notes))
        log.info("wrote %s (%d events%s)", path, len(ids), f", {seconds:.1f} s" if seconds else "")

    return SampleRun(
        outputs=outputs, notices=notices, prime_events=len(prompt) - 1,
        tokens_per_second=result.tokens_per_second, seconds=result.decode_seconds, step=loaded.step,
    )
