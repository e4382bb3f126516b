"""Sampling speed: cached against uncached decoding, and batched variations against one.

The model has the maestro-small shape (width 256, 4 heads, 6 self-attention layers, MLP ratio
4, bfloat16 matmuls), 256 latents, the performance vocabulary (390 ids) and random weights:
the cost of a step does not depend on the weights' values, and EOS is disabled so every
variation runs to the requested length. For each context M (1024, 4096, 16384) the prompt
fills the whole window with random events, then:

* cached: `Sampler(use_cache=True)`, the key/value cache with a refill pass every N/2 = 128
  events, so the measured rate includes the refills;
* uncached: `Sampler(use_cache=False)`, one full forward pass over the last M + N - 1 events
  per generated event (the same predictions, computed from scratch).

The time to the first event is the prime pass, whose logits give the first event. Rates
exclude compilation. Each measurement runs 3 times (1 with --quick) and the fastest counts,
because other processes on a shared machine only ever add time. Batched sampling generates 8
variations in lockstep at context 4096 and compares the time per step with 1 variation.

The full run adds context 4096 with float32 matmuls (`compute_dtype="float32"`) to show what
the bfloat16 default costs a cached step on a CPU without native bfloat16 matrix-vector
products.

Usage:
    .venv/bin/python benchmarks/sample.py            # every context
    .venv/bin/python benchmarks/sample.py --quick    # context 4096 only, about a minute
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time

import numpy as np

LATENTS = 256
VOCAB_SIZE = 390
BATCH_CONTEXT = 4096
BATCH_VARIATIONS = 8


@dataclasses.dataclass(frozen=True)
class Timing:
    first_event_seconds: float  # the prime pass
    step_seconds: float  # decoding time per step (per event of each variation)
    compile_seconds: float


def build_model(context: int, compute_dtype: str = "bfloat16"):
    import jax
    from flax import nnx

    from pact.configs.maestro_small import get_config
    from pact.model import PerceiverAR

    config = dataclasses.replace(get_config().model, vocab_size=VOCAB_SIZE, max_context=context, num_latents=LATENTS,
                                 compute_dtype=compute_dtype)
    model = PerceiverAR(config, rngs=nnx.Rngs(0))
    # The head starts at zero (uniform predictions); random values make sampling realistic.
    model.head.kernel[...] = 0.02 * jax.random.normal(jax.random.key(0), model.head.kernel[...].shape)
    return model


def measure(model, *, use_cache: bool, events: int, variations: int, repeats: int) -> Timing:
    """Time the prime pass and `events` decoding steps; the fastest of `repeats` runs counts."""
    from pact.sampler import Sampler
    from pact.sampling import SamplingConfig

    sampler = Sampler(model, SamplingConfig(allow_eos=False), use_cache=use_cache)
    prompt = np.random.default_rng(1).integers(2, VOCAB_SIZE, size=sampler.window).astype(np.int32)
    prompt[0] = 1  # EOS starts the piece
    compile_seconds = sampler.compiled(variations)[2]
    runs = [sampler.generate(prompt, num_tokens=events, num_variations=variations, seed=run) for run in range(repeats)]
    return Timing(
        first_event_seconds=min(run.prime_seconds for run in runs),
        step_seconds=min(run.decode_seconds / run.tokens.shape[1] for run in runs),
        compile_seconds=compile_seconds,
    )


def cpu_name() -> str:
    """Return the CPU model from /proc/cpuinfo where it exists, else the machine type."""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="context 4096 only, with fewer events and repeats")
    parser.add_argument("--contexts", type=int, nargs="+", help="contexts M to measure (default 1024 4096 16384)")
    args = parser.parse_args()

    import jax

    contexts = [(context, "bfloat16") for context in args.contexts or ([BATCH_CONTEXT] if args.quick else
                                                                       [1024, BATCH_CONTEXT, 16384])]
    if not args.quick:
        contexts.append((BATCH_CONTEXT, "float32"))
    # Cached runs cover at least one refill (every 128 events); uncached steps all cost the same.
    cached_events, uncached_events, repeats = (160, 32, 1) if args.quick else (288, 64, 3)
    started = time.perf_counter()
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, jax {jax.__version__} on {jax.default_backend()}, "
          f"Python {platform.python_version()}")
    print(f"model: maestro-small shape, {LATENTS} latents, random weights; "
          f"{cached_events} cached and {uncached_events} uncached events per run, fastest of {repeats}")
    print()

    # 1. Cached against uncached, per context.
    print("| context | matmuls | first event (s) | cached events/s | uncached events/s | cached speed-up |")
    print("|---:|---|---:|---:|---:|---:|")
    models = {}
    for context, compute_dtype in contexts:
        model = models[context, compute_dtype] = build_model(context, compute_dtype)
        cached = measure(model, use_cache=True, events=cached_events, variations=1, repeats=repeats)
        uncached = measure(model, use_cache=False, events=uncached_events, variations=1, repeats=repeats)
        print(f"| {context:,} | {compute_dtype} | {cached.first_event_seconds:.3f} | {1 / cached.step_seconds:,.1f} | "
              f"{1 / uncached.step_seconds:,.1f} | {uncached.step_seconds / cached.step_seconds:.1f}x |", flush=True)

    # 2. Batched variations against one, cached.
    model = models.get((BATCH_CONTEXT, "bfloat16")) or build_model(BATCH_CONTEXT)
    single = measure(model, use_cache=True, events=cached_events, variations=1, repeats=repeats)
    batched = measure(model, use_cache=True, events=cached_events, variations=BATCH_VARIATIONS, repeats=repeats)
    print()
    print(f"| variations at context {BATCH_CONTEXT:,} | ms per step | events/s (all variations) | cost against 1 |")
    print("|---:|---:|---:|---:|")
    for variations, timing in ((1, single), (BATCH_VARIATIONS, batched)):
        print(f"| {variations} | {1000 * timing.step_seconds:.1f} | {variations / timing.step_seconds:,.1f} | "
              f"{timing.step_seconds / single.step_seconds:.2f}x |")
    print()
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
