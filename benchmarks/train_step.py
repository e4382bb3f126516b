"""Training step: Perceiver AR against a decoder-only Transformer of the same shape.

    python benchmarks/train_step.py            # contexts 256 to 32768, 30-60 minutes on 2 cores
    python benchmarks/train_step.py --quick    # contexts 256, 2048 and 8192, about 10 minutes

For each context M, both models get the maestro-small shape (width 256, 4 heads, 6 layers,
squared-ReLU MLPs of width 1024, dropout 0.1, bfloat16 matmuls with float32 accumulation) and
train with the same `pact.train.make_train_step`, optimizer, loss and attention kernel.
Perceiver AR keeps 256 latents and maestro-small's cross-attend dropout of 0.5, with batch 8
(B * 256 targets per step). `pact.baseline.DecoderOnly` attends over all M positions in every
layer and takes a loss at each (B * M targets per step), with batch max(1, 8192 / M) so that
its long contexts finish in minutes. Once a step has 8192 positions, its tokens per second
hardly depend on the batch.

Each context runs in one process, which
1. compiles both models' steps and reads XLA's memory analysis of each (arguments, outputs and
   temporaries, less donated buffers), at batch 8 and at the batch it runs;
2. runs one warm-up step of each model, then `--rounds` rounds of: a 4096^3 bfloat16 matmul
   with float32 accumulation (the peak), then one step of each model. Interleaving the models
   exposes both to the same load from other jobs; slow models get fewer rounds;
3. prints, as JSON, every round's wall and CPU seconds of the peak and of each step.
Models whose compiled step needs more than `--memory-budget-gib`, or whose warm-up step takes
longer than `--max-step-seconds`, are recorded as such instead of timed.

The parent process turns medians over rounds into target tokens per second, of wall time and
of CPU time, and into model FLOPs utilisation: `pact.flops` model FLOPs per second over the
round's peak. It writes docs/benchmarks/train_step.json, the plot docs/benchmarks/train_step.png
and a self-contained section of docs/benchmarks.md, replaced on every run.
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


class _Contender:
    """One model's compiled step and state inside a worker, and its measurements."""

    def __init__(self, model: str, context: int, args):
        from pact.flops import decoder_only_step_flops, perceiver_ar_step_flops

        self.model = model
        config = _model_config(model, context, args)
        batch = REFERENCE_BATCH if model == "perceiver_ar" else max(1, args.baseline_tokens // context)
        flops_of = perceiver_ar_step_flops if model == "perceiver_ar" else decoder_only_step_flops
        flops = flops_of(config, batch, chunked=config.attention != "xla")
        self.result = {
            "model": model, "context": context, "batch": batch, "status": "ok",
            "num_latents": config.num_latents, "chunk_size": config.attention_chunk_size,
            "model_flops": flops.model, "executed_flops": flops.executed,
            "targets_per_step": batch * config.num_latents,
            "step_wall": [], "step_cpu": [], "peak_wall": [], "peak_cpu": [],
        }

        # Memory at the reference batch comes from a compiled step alone, never run.
        if batch != REFERENCE_BATCH:
            compiled, *_ = _compile_step(model, config, REFERENCE_BATCH)
            self.result["memory_reference_batch"] = _memory_bytes(compiled)
            del compiled
        started = time.perf_counter()
        self.compiled, self.params, self.opt_state, self.tokens = _compile_step(model, config, batch)
        self.result["compile_seconds"] = time.perf_counter() - started
        self.result["memory"] = _memory_bytes(self.compiled)
        self.result.setdefault("memory_reference_batch", self.result["memory"])
        if self.result["memory"] > args.memory_budget_gib * GIB:
            self.result["status"] = "over memory budget"
        self.steps = 0
        self.max_rounds = 0

    @property
    def active(self) -> bool:
        return self.result["status"] == "ok" and self.steps <= self.max_rounds

    def step(self) -> tuple[float, float]:
        """Run one training step; returns its wall and CPU seconds."""
        import jax

        def run():
            self.params, self.opt_state, metrics = self.compiled(self.params, self.opt_state, self.tokens, self.steps)
            return jax.block_until_ready(metrics)

        _, wall, cpu = _timed(run)
        self.steps += 1
        return wall, cpu


def run_worker(context: int, args) -> list[dict]:
    """Measure both models at one context, their steps interleaved so both see the same load."""
    import jax
    import jax.numpy as jnp

    from pact.allocator import retain_freed_memory

    retain_freed_memory()
    contenders = [_Contender(model, context, args) for model in MODELS]

    # 1. One warm-up step each. Slow steps get fewer rounds, so that a configuration takes about
    #    --seconds-per-configuration, and steps slower than --max-step-seconds none.
    for contender in contenders:
        if contender.result["status"] != "ok":
            continue
        warmup_seconds, _ = contender.step()
        contender.result["warmup_seconds"] = warmup_seconds
        if warmup_seconds > args.max_step_seconds:
            contender.result["status"] = "over time budget"
        rounds = int(args.seconds_per_configuration // warmup_seconds)
        contender.max_rounds = max(1, min(args.rounds, rounds))

    # 2. Rounds of: the peak matmul, then one step of each model that still has rounds to run.
    left = jax.random.normal(jax.random.key(0), (PEAK_SIZE, PEAK_SIZE), jnp.bfloat16)
    right = jax.random.normal(jax.random.key(1), (PEAK_SIZE, PEAK_SIZE), jnp.bfloat16)
    matmul = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    matmul(left, right).block_until_ready()
    for _ in range(args.rounds):
        active = [contender for contender in contenders if contender.active]
        if not active:
            break
        _, peak_wall, peak_cpu = _timed(lambda: matmul(left, right).block_until_ready())
        for contender in active:
            wall, cpu = contender.step()
            for name, value in (("step_wall", wall), ("step_cpu", cpu), ("peak_wall", peak_wall), ("peak_cpu", peak_cpu)):
                contender.result[name].append(value)

    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for contender in contenders:
        contender.result["peak_flops"] = 2 * PEAK_SIZE**3
        contender.result["process_peak_rss"] = peak_rss
    return [contender.result for contender in contenders]


# ---------------------------------------------------------------------------------------------
# Parent: run every configuration, summarise, write the docs.


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def summarise(result: dict) -> dict:
    """Medians over rounds: tokens/s, step seconds and utilisation by wall and by CPU time."""
    if result["status"] != "ok" or not result.get("step_wall"):
        return result
    steps, peaks = result["step_wall"], result["peak_wall"]
    peak_rates = [result["peak_flops"] / seconds for seconds in peaks]
    result["rounds"] = len(steps)
    result["step_seconds"] = _median(steps)
    result["tokens_per_second"] = result["targets_per_step"] / result["step_seconds"]
    result["peak_flops_per_second"] = _median(peak_rates)
    result["mfu"] = _median([result["model_flops"] / step / rate for step, rate in zip(steps, peak_rates)])
    # By CPU time: other processes on the cores stretch wall time but hardly CPU time.
    result["step_cpu_seconds"] = _median(result["step_cpu"])
    result["tokens_per_cpu_second"] = result["targets_per_step"] / result["step_cpu_seconds"]
    result["mfu_cpu"] = _median([
        (result["model_flops"] / step) / (result["peak_flops"] / peak)
        for step, peak in zip(result["step_cpu"], result["peak_cpu"])
    ])
    return result


def run_context(context: int, args) -> dict[str, dict]:
    """Run the worker process of one context; a crash or a timeout becomes each model's status."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(context), *_forwarded_options(args)]
    status = None
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=args.worker_timeout)
    except subprocess.TimeoutExpired:
        status = f"timed out after {args.worker_timeout} s"
    else:
        lines = [line for line in completed.stdout.splitlines() if line.startswith("[")]
        if completed.returncode in (-9, 137):
            status = "out of memory (process killed)"
        elif completed.returncode != 0 or not lines:
            tail = completed.stderr.strip().splitlines()[-1:] or ["no output"]
            status = f"failed: {tail[0][:200]}"
    if status is not None:
        return {model: {"model": model, "context": context, "status": status} for model in MODELS}
    return {result["model"]: summarise(result) for result in json.loads(lines[-1])}


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
        text = cpuinfo.read_text()
        match = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        cpu = match.group(1).strip() if match else cpu
        flags = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
        present = flags.group(1).split() if flags else []
        features = [name for name in ("avx512f", "avx512_bf16", "amx_bf16") if name in present]
        cpu += f" ({', '.join(features) or 'no AVX-512'})"
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    return f"{os.cpu_count()} cores of {cpu}, {memory:.0f} GiB, {platform.system()} {platform.release()}"


def _load_average() -> str:
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "-"


def _ratio(results: dict, context: int, key: str) -> float | None:
    """Perceiver AR's `key` over the decoder-only model's at one context, where both exist."""
    ours = results.get(("perceiver_ar", context), {}).get(key)
    theirs = results.get(("decoder_only", context), {}).get(key)
    return None if not ours or not theirs else ours / theirs


def _format_gib(value) -> str:
    return "-" if value is None else f"{value / GIB:.2f}"


def _format_ratio(value, suffix: str = "x") -> str:
    if value is None:
        return "-"
    digits = 2 if value < 1 else 1
    return f"{value:.{digits}f}{suffix}"


def _table_row(model: str, context: int, result: dict) -> str:
    ok = "tokens_per_second" in result
    cells = [str(context), LABELS[model], str(result.get("batch", "-"))]
    cells += [f"{result['tokens_per_second']:,.0f}", f"{result['tokens_per_cpu_second']:,.0f}",
              f"{result['step_seconds']:.2f}"] if ok else ["-", "-", "-"]
    cells += [_format_gib(result.get("memory_reference_batch")), _format_gib(result.get("memory"))]
    cells += [f"{100 * result['mfu']:.0f}%", f"{100 * result['mfu_cpu']:.0f}%"] if ok else ["-", "-"]
    cells.append(result["status"] if result["status"] != "ok" else f"ok, {result.get('rounds', 0)} rounds")
    return "| " + " | ".join(cells) + " |"


def markdown_section(results: dict, contexts: list[int], meta: dict) -> str:
    lines = [SECTION_TITLE, ""]
    lines += [
        f"Measured {meta['date']} on {meta['machine']}, jax {meta['jax']}. Load average "
        f"{meta['load_before']} before and {meta['load_after']} after the run: other jobs shared "
        "these cores, so wall times vary between rounds. Command:",
        "",
        f"    {meta['command']}",
        "",
        "Both models have the maestro-small shape: width 256, 4 heads, 6 layers, MLP width 1024, "
        f"vocabulary {meta['vocab_size']}, bfloat16 matmuls with float32 accumulation and dropout 0.1. "
        "They train with the same step function, optimizer and attention kernel (chunked, blocks of "
        f"up to {meta['chunk_size']} positions). Perceiver AR has {meta['latents']} latents and "
        "maestro-small's cross-attend dropout of 0.5, so half of the context is neither embedded "
        "nor attended in training; its targets per step are batch x latents. The decoder-only "
        "model attends causally over all M positions in every layer and has a target at each, "
        "batch x M per step, with batch max(1, 8192 / M). Neither kernel skips fully masked "
        "blocks, so the decoder-only model also computes its masked upper triangle.",
        "",
        "Each context runs in its own process: per round, a "
        f"{PEAK_SIZE}^3 bfloat16 matmul with float32 accumulation (the peak), then one step of "
        "each model, so both models see the same load. Figures are medians over rounds. Tokens "
        "per CPU-second use the process's CPU time, which other jobs on the machine disturb less "
        "than wall time. MFU divides the analytic model FLOPs of `pact.flops` (forward and "
        "backward matmuls, recomputation excluded) per second by the same round's peak, by wall "
        "time and by CPU time. Memory is XLA's memory analysis of the compiled step (arguments, "
        "outputs and temporaries, less donated buffers), at batch 8 for both models and at the "
        "batch that ran.",
        "",
        "| context M | model | batch | target tokens/s | per CPU-second | step (s) "
        "| memory at batch 8 (GiB) | memory as run (GiB) | MFU | MFU (CPU time) | status |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for context in contexts:
        for model in MODELS:
            if (model, context) in results:
                lines.append(_table_row(model, context, results[(model, context)]))
    lines += [
        "", "Perceiver AR over the decoder-only model at the same context:", "",
        "| context M | target tokens/s | per CPU-second | memory at batch 8 |", "|---:|---:|---:|---:|",
    ]
    for context in contexts:
        lines.append(
            f"| {context} | {_format_ratio(_ratio(results, context, 'tokens_per_second'))} | "
            f"{_format_ratio(_ratio(results, context, 'tokens_per_cpu_second'))} | "
            f"{_format_ratio(_ratio(results, context, 'memory_reference_batch'), '')} |"
        )
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
        rest = "" if following < 0 else "\n" + text[following + 1:]
        text = text[:start] + section + rest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_plot(path: Path, results: dict, contexts: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (speed_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for model, marker in zip(MODELS, ("o", "s")):
        measured = [(context, results[(model, context)]) for context in contexts if (model, context) in results]
        speed = [(context, r["tokens_per_second"]) for context, r in measured if "tokens_per_second" in r]
        cpu_speed = [(context, r["tokens_per_cpu_second"]) for context, r in measured if "tokens_per_second" in r]
        memory = [(context, r["memory_reference_batch"] / GIB) for context, r in measured
                  if r.get("memory_reference_batch")]
        if speed:
            line, = speed_axis.plot(*zip(*speed), marker=marker, label=f"{LABELS[model]}, wall time")
            speed_axis.plot(*zip(*cpu_speed), marker=marker, linestyle="--", color=line.get_color(),
                            label=f"{LABELS[model]}, per CPU-second")
        if memory:
            memory_axis.plot(*zip(*memory), marker=marker, label=LABELS[model])
    titles = ((speed_axis, "target tokens per second"), (memory_axis, "step memory at batch 8 (GiB, XLA)"))
    for axis, title in titles:
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("context M (tokens)")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def _memory_slope(results: dict, contexts: list[int]) -> float | None:
    """Slope of log memory against log context for Perceiver AR, over its two longest contexts."""
    points = [(math.log(context), math.log(results[("perceiver_ar", context)]["memory_reference_batch"]))
              for context in contexts if results.get(("perceiver_ar", context), {}).get("memory_reference_batch")]
    if len(points) < 2:
        return None
    (x0, y0), (x1, y1) = points[-2], points[-1]
    return (y1 - y0) / (x1 - x0)


def target_notes(results: dict, contexts: list[int]) -> list[str]:
    notes = ["Targets:", ""]
    wall = _ratio(results, 8192, "tokens_per_second")
    cpu = _ratio(results, 8192, "tokens_per_cpu_second")
    notes.append(
        "- Target tokens/s at context 8192, Perceiver AR over decoder-only (target: at least 5x): "
        f"{_format_ratio(wall)} by wall time, {_format_ratio(cpu)} per CPU-second."
    )
    ours, theirs = results.get(("perceiver_ar", 8192), {}), results.get(("decoder_only", 8192), {})
    if "model_flops" in ours and "model_flops" in theirs:
        our_flops = ours["model_flops"] / ours["targets_per_step"]
        their_flops = theirs["model_flops"] / theirs["targets_per_step"]
        notes.append(
            f"  Per target, Perceiver AR needs {our_flops / 1e6:.1f} model MFLOPs at 8192 and the "
            f"decoder-only model {their_flops / 1e6:.1f}, a ratio of {their_flops / our_flops:.2f}: "
            "at equal utilisation that is the speed ratio, and both models reach similar MFU here."
        )

    shortest = min(contexts)
    latents_only = results.get(("perceiver_ar", shortest), {}).get("tokens_per_cpu_second")
    baseline = results.get(("decoder_only", 8192), {}).get("tokens_per_cpu_second")
    if latents_only and baseline:
        notes.append(
            f"  At context {shortest} Perceiver AR has its latents and nothing else to attend; it trains "
            f"{latents_only:,.0f} target tokens per CPU-second. Even a cross-attention over the context "
            f"that cost nothing would therefore give at most {latents_only / baseline:.1f}x at 8192. "
            "Each target still passes through the cross-attention block and six layers, as many "
            "as a decoder-only position, and only the attention over M differs."
        )

    slope = _memory_slope(results, contexts)
    memory_ratio = _ratio(results, 16384, "memory_reference_batch")
    notes.append(
        "- Perceiver AR memory against context (target: at most linear): log-log slope "
        f"{'-' if slope is None else f'{slope:.2f}'} between its two longest contexts. At 16384 it needs "
        f"{_format_ratio(memory_ratio, '')} of the decoder-only model's memory at the same batch "
        "(target: at most 0.25, or the decoder-only model does not fit)."
    )
    machine_memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    too_large = [context for context in contexts
                 if results.get(("decoder_only", context), {}).get("memory_reference_batch", 0) > machine_memory]
    if too_large:
        notes.append(
            f"  At batch 8 the decoder-only step needs more than this machine's {machine_memory / GIB:.0f} GiB "
            f"at context {', '.join(map(str, too_large))}; it ran there only at batch 1."
        )

    reference = results.get(("perceiver_ar", REFERENCE_CONTEXT), {})
    if "mfu" in reference:
        notes.append(
            f"- MFU of the reference config (maestro-small: context {REFERENCE_CONTEXT}, batch 8; target: at "
            f"least 35%): {100 * reference['mfu']:.0f}% by wall time, {100 * reference['mfu_cpu']:.0f}% by CPU "
            f"time; median peak {reference['peak_flops_per_second'] / 1e9:.0f} GFLOP/s of wall time."
        )
    return notes + [""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="contexts 256, 2048 and 8192 with 2 rounds")
    parser.add_argument("--contexts", type=int, nargs="+", help="context lengths M in tokens")
    parser.add_argument("--latents", type=int, default=256, help="Perceiver AR latents N")
    parser.add_argument("--vocab-size", type=int, default=390,
                        help="vocabulary size (the performance encoding's 388 events, padding and end)")
    parser.add_argument("--rounds", type=int, help="timed rounds per context (default 5, 2 with --quick)")
    parser.add_argument("--chunk-size", type=int, default=512,
                        help="attention block size in positions for both models (0: the preset's)")
    parser.add_argument("--baseline-tokens", type=int, default=8192,
                        help="positions per decoder-only step: its batch is max(1, this / M)")
    parser.add_argument("--memory-budget-gib", type=float, default=16.0,
                        help="skip models whose compiled step needs more memory than this, in GiB")
    parser.add_argument("--max-step-seconds", type=float, default=600.0,
                        help="skip the timed rounds of models whose warm-up step takes longer")
    parser.add_argument("--seconds-per-configuration", type=float, default=300.0,
                        help="fewer rounds (at least 1) for models whose steps would take longer")
    parser.add_argument("--worker-timeout", type=int, default=2400, help="seconds before a context's process is stopped")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--rewrite-docs", action="store_true",
                        help="rewrite the docs section and plot from the saved JSON results, without measuring")
    parser.add_argument("--worker", type=int, metavar="CONTEXT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5

    if args.worker:
        print(json.dumps(run_worker(args.worker, args)), flush=True)
        return

    plot = args.output.parent / "benchmarks" / "train_step.png"
    results_path = plot.parent / "train_step.json"
    if args.rewrite_docs:
        saved = json.loads(results_path.read_text())
        results = {(result["model"], result["context"]): result for result in saved["results"]}
        contexts = sorted({context for _, context in results})
        write_docs(args, results, contexts, saved["meta"], plot)
        return

    # Context N (the latents alone) measures Perceiver AR's cost without any context to attend.
    default_contexts = [2048, 8192] if args.quick else [1024, 2048, 4096, 8192, 16384, 32768]
    contexts = args.contexts or sorted({args.latents, *default_contexts})
    meta = {"load_before": _load_average()}
    results = {}
    for context in contexts:
        started = time.perf_counter()
        for model, result in run_context(context, args).items():
            results[(model, context)] = result
            speed = (f"{result['tokens_per_second']:,.0f} target tokens/s, "
                     f"{result['tokens_per_cpu_second']:,.0f} per CPU-second"
                     if "tokens_per_second" in result else result["status"])
            print(f"{LABELS[model]:>13} M={context:>6}: {speed}", flush=True)
        print(f"{'':>13} M={context:>6} took {time.perf_counter() - started:.0f} s", flush=True)

    import jax

    chunk_size = next((r["chunk_size"] for r in results.values() if "chunk_size" in r), args.chunk_size)
    command = "python benchmarks/train_step.py " + " ".join(sys.argv[1:] if argv is None else argv)
    meta.update({
        "date": datetime.date.today().isoformat(), "machine": machine_description(), "jax": jax.__version__,
        "command": command.strip(), "chunk_size": chunk_size, "load_after": _load_average(),
        "plot": plot.relative_to(args.output.parent).as_posix(),
        "vocab_size": args.vocab_size, "latents": args.latents,
    })
    raw = [{**result, "model": model, "context": context} for (model, context), result in results.items()]
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps({"meta": meta, "results": raw}, indent=1))
    write_docs(args, results, contexts, meta, plot)


def write_docs(args, results: dict, contexts: list[int], meta: dict, plot: Path) -> None:
    """Write the plot and the docs section from measured results, and print the target notes."""
    meta["notes"] = target_notes(results, contexts)
    write_plot(plot, results, contexts)
    write_section(args.output, markdown_section(results, contexts, meta))
    print("\n".join(meta["notes"]))


if __name__ == "__main__":
    main()
