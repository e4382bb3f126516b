"""Training step: Perceiver AR against a decoder-only Transformer of the same shape.

    python benchmarks/train_step.py            # every context, about 15-25 minutes on 2 cores
    python benchmarks/train_step.py --quick    # contexts 1024, 2048 and 8192, a few minutes

For each context M, both models get the maestro-small shape (width 256, 4 heads, 6 layers,
squared-ReLU MLPs of width 1024, dropout 0.1, bfloat16 matmuls with float32 accumulation) and
train with the same `pact.train.make_train_step`, optimizer, loss and attention kernels.
Perceiver AR keeps 256 latents and maestro-small's cross-attend dropout of 0.5;
`pact.baseline.DecoderOnly` attends over all M positions in every layer and takes a loss at
each of them. Each configuration runs in its own process, which

1. compiles the step and reads XLA's memory analysis of it (arguments + outputs + temporaries
   - donated buffers), at the reference batch (8) and at the batch it runs;
2. runs one warm-up step, then `--rounds` rounds (fewer for slow steps) of: a 4096^3 bfloat16
   matmul with float32 accumulation (the peak), then one training step;
3. reports target tokens per second, model FLOPs utilisation and the process's peak resident
   memory. Perceiver AR has batch * latents targets per step, the decoder-only model batch * M.
   Utilisation is the analytic model FLOPs of `pact.flops` per second over the round's peak.

The decoder-only model runs with batch max(1, 8192 / M) so that its long contexts finish in
minutes; its tokens per second hardly depend on the batch once a step holds 8192 positions.
Configurations whose compiled step needs more than `--memory-budget-gib`, or whose warm-up
step takes longer than `--max-step-seconds`, are recorded as such instead of run.

Results go to docs/benchmarks/train_step.json, a plot to docs/benchmarks/train_step.png and a
self-contained section of docs/benchmarks.md, replaced on every run.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION_TITLE = "## Training step: Perceiver AR against a decoder-only Transformer"
MODELS = ("perceiver_ar", "decoder_only")
LABELS = {"perceiver_ar": "Perceiver AR", "decoder_only": "decoder-only"}
REFERENCE_BATCH = 8
REFERENCE_CONTEXT = 2048  # maestro-small's context: the reference config for utilisation
PEAK_SIZE = 4096
GIB = 2**30


# ---------------------------------------------------------------------------------------------
# Worker: one model at one context, in its own process.


def _model_config(model: str, context: int, args):
    from pact.config import get_preset

    config = get_preset("maestro-small").model
    latents = args.latents if model == "perceiver_ar" else context
    return dataclasses.replace(
        config, vocab_size=args.vocab_size, max_context=context, num_latents=latents,
        attention_chunk_size=args.chunk_size or config.attention_chunk_size,
    )


def _compile_step(model: str, model_config, batch: int):
    """Compiled train step, its initial params and optimizer state, and a random batch."""
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from pact.baseline import DecoderOnly
    from pact.config import Config, DataConfig, TrainConfig
    from pact.model import PerceiverAR
    from pact.train import make_optimizer, make_train_step

    model_class = PerceiverAR if model == "perceiver_ar" else DecoderOnly
    config = Config(model=model_config, data=DataConfig(batch_size=batch), train=TrainConfig(steps=1000))
    graphdef, state = nnx.split(model_class(model_config, rngs=nnx.Rngs(0)))
    params = nnx.to_pure_dict(state)
    optimizer = make_optimizer(config.train)
    opt_state = optimizer.init(params)
    rng = np.random.default_rng(0)
    shape = (batch, model_config.max_context)
    tokens = {name: jnp.asarray(rng.integers(2, model_config.vocab_size, shape), jnp.int32)
              for name in ("inputs", "targets")}
    step = make_train_step(graphdef, optimizer, config)
    compiled = step.lower(params, opt_state, tokens, 0).compile()
    return compiled, params, opt_state, tokens


def _memory_bytes(compiled) -> int:
    """Bytes the compiled step needs at once, from XLA's memory analysis."""
    stats = compiled.memory_analysis()
    return int(stats.argument_size_in_bytes + stats.output_size_in_bytes
               + stats.temp_size_in_bytes - stats.alias_size_in_bytes)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed(function):
    """Run `function`, returning its result, wall seconds and process CPU seconds."""
    wall, cpu = time.perf_counter(), _cpu_seconds()
    result = function()
    return result, time.perf_counter() - wall, _cpu_seconds() - cpu


def run_worker(model: str, context: int, args) -> dict:
    import jax
    import jax.numpy as jnp

    from pact.allocator import retain_freed_memory
    from pact.flops import decoder_only_step_flops, perceiver_ar_step_flops

    retain_freed_memory()
    model_config = _model_config(model, context, args)
    batch = REFERENCE_BATCH if model == "perceiver_ar" else max(1, args.baseline_tokens // context)
    flops_of = perceiver_ar_step_flops if model == "perceiver_ar" else decoder_only_step_flops
    chunked = model_config.attention != "xla"
    result = {"model": model, "context": context, "batch": batch, "status": "ok",
              "num_latents": model_config.num_latents, "chunk_size": model_config.attention_chunk_size}

    # 1. Memory at the reference batch, from the compiled step alone.
    if batch != REFERENCE_BATCH:
        compiled, *_ = _compile_step(model, model_config, REFERENCE_BATCH)
        result["memory_reference_batch"] = _memory_bytes(compiled)
        del compiled
    started = time.perf_counter()
    compiled, params, opt_state, tokens = _compile_step(model, model_config, batch)
    result["compile_seconds"] = time.perf_counter() - started
    result["memory"] = _memory_bytes(compiled)
    result.setdefault("memory_reference_batch", result["memory"])
    flops = flops_of(model_config, batch, chunked=chunked)
    result["model_flops"] = flops.model
    result["executed_flops"] = flops.executed
    result["targets_per_step"] = batch * model_config.num_latents
    if result["memory"] > args.memory_budget_gib * GIB:
        result["status"] = "over memory budget"
        return result

    # 2. Warm-up step, then rounds of (peak matmul, step).
    def train_step(index):
        nonlocal params, opt_state
        params, opt_state, metrics = compiled(params, opt_state, tokens, index)
        return jax.block_until_ready(metrics)

    _, warmup_seconds, _ = _timed(lambda: train_step(0))
    result["warmup_seconds"] = warmup_seconds
    if warmup_seconds > args.max_step_seconds:
        result["status"] = "over time budget"
        return result

    left = jax.random.normal(jax.random.key(0), (PEAK_SIZE, PEAK_SIZE), jnp.bfloat16)
    right = jax.random.normal(jax.random.key(1), (PEAK_SIZE, PEAK_SIZE), jnp.bfloat16)
    matmul = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    matmul(left, right).block_until_ready()
    peak_flops = 2 * PEAK_SIZE**3
    rounds = {"step_wall": [], "step_cpu": [], "peak_wall": [], "peak_cpu": []}
    # Slow configurations get fewer rounds, so that each takes about --seconds-per-configuration.
    count = max(1, min(args.rounds, int(args.seconds_per_configuration // warmup_seconds)))
    for index in range(count):
        _, wall, cpu = _timed(lambda: matmul(left, right).block_until_ready())
        rounds["peak_wall"].append(wall)
        rounds["peak_cpu"].append(cpu)
        _, wall, cpu = _timed(lambda: train_step(index + 1))
        rounds["step_wall"].append(wall)
        rounds["step_cpu"].append(cpu)
    result.update(rounds)
    result["peak_flops"] = peak_flops
    result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


# ---------------------------------------------------------------------------------------------
# Parent: run every configuration, summarise, write the docs.


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def summarise(result: dict) -> dict:
    """Medians over rounds: tokens/s, step seconds and utilisation by wall and by CPU time."""
    if result["status"] != "ok":
        return result
    steps, peaks = result["step_wall"], result["peak_wall"]
    peak_rates = [result["peak_flops"] / seconds for seconds in peaks]
    result["step_seconds"] = _median(steps)
    result["tokens_per_second"] = result["targets_per_step"] / result["step_seconds"]
    result["peak_flops_per_second"] = _median(peak_rates)
    result["mfu"] = _median([result["model_flops"] / step / rate for step, rate in zip(steps, peak_rates)])
    # By CPU time: robust when other processes share the cores, since both terms slow alike.
    result["mfu_cpu"] = _median([
        (result["model_flops"] / step) / (result["peak_flops"] / peak)
        for step, peak in zip(result["step_cpu"], result["peak_cpu"])
    ])
    result["tokens_per_cpu_second"] = result["targets_per_step"] / _median(result["step_cpu"])
    return result


def run_configuration(model: str, context: int, args) -> dict:
    """Run one worker process; a crash or a timeout becomes a status."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", model, str(context),
               *_forwarded_options(args)]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=args.worker_timeout)
    except subprocess.TimeoutExpired:
        return {"model": model, "context": context, "status": f"timed out after {args.worker_timeout} s"}
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        tail = completed.stderr.strip().splitlines()[-1:] or ["no output"]
        status = "out of memory" if completed.returncode in (-9, 137) else f"failed: {tail[0][:200]}"
        return {"model": model, "context": context, "status": status}
    return summarise(json.loads(lines[-1]))


def _forwarded_options(args) -> list[str]:
    return [
        "--latents", str(args.latents), "--vocab-size", str(args.vocab_size),
        "--rounds", str(args.rounds), "--memory-budget-gib", str(args.memory_budget_gib),
        "--max-step-seconds", str(args.max_step_seconds), "--baseline-tokens", str(args.baseline_tokens),
        "--seconds-per-configuration", str(args.seconds_per_configuration),
        "--chunk-size", str(args.chunk_size),
    ]


def machine_description() -> str:
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M)
        cpu = match.group(1).strip() if match else cpu
        flags = re.search(r"^flags\s*:\s*(.+)$", cpuinfo.read_text(), re.M)
        features = [name for name in ("avx512f", "avx512_bf16", "amx_bf16") if flags and name in flags.group(1).split()]
        cpu += f" ({', '.join(features) or 'no AVX-512'})"
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    return f"{os.cpu_count()} cores of {cpu}, {memory:.0f} GiB, {platform.system()} {platform.release()}"


def _speed_ratio(results: dict, context: int) -> float | None:
    ours, theirs = results.get(("perceiver_ar", context)), results.get(("decoder_only", context))
    if not ours or not theirs or "tokens_per_second" not in ours or "tokens_per_second" not in theirs:
        return None
    return ours["tokens_per_second"] / theirs["tokens_per_second"]


def _format_gib(value) -> str:
    return "-" if value is None else f"{value / GIB:.2f}"


def _table_row(model: str, context: int, result: dict) -> str:
    cells = [str(context), LABELS[model], str(result.get("batch", "-"))]
    if result["status"] == "ok":
        cells += [f"{result['tokens_per_second']:,.0f}", f"{result['step_seconds']:.2f}"]
    else:
        cells += ["-", "-"]
    cells += [_format_gib(result.get("memory_reference_batch")), _format_gib(result.get("peak_rss"))]
    if result["status"] == "ok":
        cells += [f"{100 * result['mfu']:.0f}%", f"{100 * result['mfu_cpu']:.0f}%"]
    else:
        cells += ["-", "-"]
    cells.append(result["status"])
    return "| " + " | ".join(cells) + " |"


def markdown_section(results: dict, contexts: list[int], args, meta: dict) -> str:
    lines = [SECTION_TITLE, ""]
    lines += [
        f"Measured {meta['date']} on {meta['machine']}, jax {meta['jax']}, load average "
        f"{meta['load_before']} before and {meta['load_after']} after the run. Command:",
        "",
        f"    {meta['command']}",
        "",
        "Both models have the maestro-small shape (width 256, 4 heads, 6 layers, MLP width 1024, "
        f"vocabulary {args.vocab_size}, bfloat16 matmuls with float32 accumulation, dropout 0.1) "
        "and train with the same step function, optimizer and attention kernels (chunked, "
        f"chunks of up to {meta['chunk_size']} positions). Perceiver AR has {args.latents} latents "
        "and cross-attend dropout 0.5 (maestro-small's), so half of the context is neither embedded "
        "nor attended in training; its targets per step are batch x latents. The decoder-only "
        "model attends causally over all M positions in every layer and has a target at each, "
        "batch x M per step. Neither attention kernel skips fully masked blocks, so the "
        "decoder-only model computes its masked upper triangle too, as the FLOP counts below do.",
        "",
        "Throughput is the median over rounds of target tokens per second of wall time. Memory is "
        "XLA's memory analysis of the compiled step at batch 8 for both models (arguments, outputs "
        "and temporaries, less donated buffers), computed without running it; peak RSS is the "
        "resident memory of the process that ran the listed batch. MFU divides the analytic model "
        "FLOPs of `pact.flops` (forward and backward matmuls, recomputation excluded) per second by "
        f"a {PEAK_SIZE}^3 bfloat16 matmul with float32 accumulation timed just before each step; "
        "the CPU-time column uses process CPU seconds for both, which other processes on the "
        "machine disturb less.",
        "",
        "| context M | model | batch | target tokens/s | step (s) | memory at batch 8 (GiB) | peak RSS (GiB) | MFU | MFU (CPU time) | status |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for context in contexts:
        for model in MODELS:
            if (model, context) in results:
                lines.append(_table_row(model, context, results[(model, context)]))
    lines += ["", "Perceiver AR over decoder-only, same context:", "",
              "| context M | target tokens/s | memory at batch 8 |", "|---:|---:|---:|"]
    for context in contexts:
        speed = _speed_ratio(results, context)
        ours, theirs = results.get(("perceiver_ar", context)), results.get(("decoder_only", context))
        memory = None
        if ours and theirs and ours.get("memory_reference_batch") and theirs.get("memory_reference_batch"):
            memory = ours["memory_reference_batch"] / theirs["memory_reference_batch"]
        lines.append(f"| {context} | {'-' if speed is None else f'{speed:.1f}x'} | "
                     f"{'-' if memory is None else f'{memory:.2f}'} |")
    lines += ["", f"![Target tokens per second and memory against context]({meta['plot']})", ""]
    lines += meta["notes"]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace this benchmark's section of `path` (or append it), keeping other sections."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find(SECTION_TITLE)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        following = text.find("\n## ", start + len(SECTION_TITLE))
        end = len(text) if following < 0 else following + 1
        text = text[:start] + section + ("\n" + text[end:] if following >= 0 else "")
    path.write_text(text)


def write_plot(path: Path, results: dict, contexts: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (speed_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for model, marker in zip(MODELS, ("o", "s")):
        measured = [(c, results[(model, c)]) for c in contexts if (model, c) in results]
        speed = [(c, r["tokens_per_second"]) for c, r in measured if r["status"] == "ok"]
        memory = [(c, r["memory_reference_batch"]) for c, r in measured if r.get("memory_reference_batch")]
        if speed:
            speed_axis.plot(*zip(*speed), marker=marker, label=LABELS[model])
        if memory:
            memory_axis.plot([c for c, _ in memory], [m / GIB for _, m in memory], marker=marker, label=LABELS[model])
    for axis, title in ((speed_axis, "target tokens per second"), (memory_axis, "step memory at batch 8 (GiB, XLA)")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("context M (tokens)")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def _growth_exponent(results: dict, contexts: list[int]) -> float | None:
    """Slope of log memory against log context for Perceiver AR over the measured contexts."""
    points = [(math.log(c), math.log(results[("perceiver_ar", c)]["memory_reference_batch"]))
              for c in contexts if results.get(("perceiver_ar", c), {}).get("memory_reference_batch")]
    if len(points) < 2:
        return None
    (x0, y0), (x1, y1) = points[0], points[-1]
    return (y1 - y0) / (x1 - x0)


def target_notes(results: dict, contexts: list[int]) -> list[str]:
    notes = ["Targets:", ""]
    speed = _speed_ratio(results, 8192)
    notes.append(f"- Target tokens/s at context 8192, Perceiver AR over decoder-only (target: at least 5x): "
                 f"{'not measured' if speed is None else f'{speed:.1f}x'}.")
    exponent = _growth_exponent(results, contexts)
    ours, theirs = results.get(("perceiver_ar", 16384)), results.get(("decoder_only", 16384))
    memory_ratio = None
    if ours and theirs and ours.get("memory_reference_batch") and theirs.get("memory_reference_batch"):
        memory_ratio = ours["memory_reference_batch"] / theirs["memory_reference_batch"]
    notes.append(
        "- Perceiver AR memory against context (target: at most linear): log-log slope "
        f"{'-' if exponent is None else f'{exponent:.2f}'} from the shortest to the longest context; "
        f"at 16384 it needs {'-' if memory_ratio is None else f'{memory_ratio:.2f}'} of the decoder-only "
        "model's memory at the same batch (target: at most 0.25, or the baseline does not fit)."
    )
    reference = results.get(("perceiver_ar", REFERENCE_CONTEXT))
    if reference and reference["status"] == "ok":
        notes.append(
            f"- MFU of the reference config (maestro-small, context {REFERENCE_CONTEXT}, batch 8; target: at "
            f"least 35%): {100 * reference['mfu']:.0f}% by wall time, {100 * reference['mfu_cpu']:.0f}% by CPU "
            f"time, against a measured peak of {reference['peak_flops_per_second'] / 1e9:.0f} GFLOP/s."
        )
    return notes + [""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="contexts 1024, 2048 and 8192 with 2 rounds")
    parser.add_argument("--contexts", type=int, nargs="+", help="context lengths M in tokens")
    parser.add_argument("--latents", type=int, default=256, help="Perceiver AR latents N")
    parser.add_argument("--vocab-size", type=int, default=390,
                        help="vocabulary size (the performance encoding's 388 events, padding and end)")
    parser.add_argument("--rounds", type=int, help="timed steps per configuration (default 5, 2 with --quick)")
    parser.add_argument("--chunk-size", type=int, default=0,
                        help="attention chunk size in positions for both models (default: the preset's)")
    parser.add_argument("--baseline-tokens", type=int, default=8192,
                        help="positions per decoder-only step: its batch is max(1, this / M)")
    parser.add_argument("--memory-budget-gib", type=float, default=16.0,
                        help="skip configurations whose compiled step needs more memory than this")
    parser.add_argument("--max-step-seconds", type=float, default=600.0,
                        help="skip the timed rounds of configurations whose warm-up step takes longer")
    parser.add_argument("--seconds-per-configuration", type=float, default=300.0,
                        help="fewer rounds (at least 1) for configurations whose steps would take longer")
    parser.add_argument("--worker-timeout", type=int, default=1800, help="seconds before a worker is stopped")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "CONTEXT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5

    if args.worker:
        print(json.dumps(run_worker(args.worker[0], int(args.worker[1]), args)), flush=True)
        return

    contexts = args.contexts or ([1024, 2048, 8192] if args.quick else [1024, 2048, 4096, 8192, 16384, 32768])
    meta = {"load_before": " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "-"}
    results = {}
    for context in contexts:
        for model in MODELS:
            started = time.perf_counter()
            result = run_configuration(model, context, args)
            results[(model, context)] = result
            speed = f"{result['tokens_per_second']:,.0f} target tokens/s" if "tokens_per_second" in result else result["status"]
            print(f"{LABELS[model]:>13} M={context:>6}: {speed} ({time.perf_counter() - started:.0f} s)", flush=True)

    import jax

    chunk_size = next((r["chunk_size"] for r in results.values() if "chunk_size" in r), args.chunk_size)
    command = "python benchmarks/train_step.py " + " ".join(sys.argv[1:] if argv is None else argv)
    plot = args.output.parent / "benchmarks" / "train_step.png"
    meta.update({
        "date": datetime.date.today().isoformat(), "machine": machine_description(), "jax": jax.__version__,
        "command": command.strip(), "chunk_size": chunk_size,
        "load_after": " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "-",
        "plot": plot.relative_to(args.output.parent).as_posix(),
    })
    meta["notes"] = target_notes(results, contexts)
    write_plot(plot, results, contexts)
    raw = [{**result, "model": model, "context": context} for (model, context), result in results.items()]
    (plot.parent / "train_step.json").write_text(json.dumps({"meta": meta, "results": raw}, indent=1))
    write_section(args.output, markdown_section(results, contexts, args, meta))
    print("\n".join(meta["notes"]))


if __name__ == "__main__":
    main()
