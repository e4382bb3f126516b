"""Training: the loss, one jitted train step, and the loop that owns a run directory.

`train_and_evaluate(config, run_dir)` is the whole of `pact train`: it opens the dataset,
builds or restores the model and optimizer, then loops over steps, logging, validating and
checkpointing, and returns a summary. Running it again on the same run directory resumes from
the newest checkpoint with the same data order and random state, so an interrupted run and an
uninterrupted one reach the same parameters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from pact.allocator import retain_freed_memory
from pact.checkpoint import Checkpointer, abstract_like
from pact.config import Config, TrainConfig
from pact.errors import ConfigError
from pact.model import PAD_ID, PerceiverAR, count_parameters
from pact.run import RunDir

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Loss.


def loss_sums(logits: jax.Array, targets: jax.Array, z_loss: float) -> dict[str, jax.Array]:
    """Sums over the valid targets of one batch (float32 scalars).

    logits [B, N, V] float32, targets [B, N] int32 with PAD_ID where a latent is padding.
    Returns `nll` (nats), `z_loss` (z_loss * log(Z)^2), `correct` (argmax hits) and `count`.
    Sums rather than means, so micro-batches and devices combine exactly.
    """
    mask = (targets != PAD_ID).astype(jnp.float32)
    log_normaliser = jax.nn.logsumexp(logits, axis=-1)  # [B, N]
    target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    nll = (log_normaliser - target_logits) * mask
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32) * mask
    return {
        "nll": nll.sum(),
        "z_loss": (z_loss * jnp.square(log_normaliser) * mask).sum(),
        "correct": correct.sum(),
        "count": mask.sum(),
    }


def _objective(sums: dict[str, jax.Array]) -> jax.Array:
    return sums["nll"] + sums["z_loss"]


# ---------------------------------------------------------------------------------------------
# Optimizer.


def learning_rate_schedule(config: TrainConfig) -> optax.Schedule:
    """Linear warm-up to the peak, then cosine decay to `end_learning_rate_fraction` of it."""
    warmup = min(config.warmup_steps, config.steps - 1)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=warmup,
        decay_steps=config.steps,
        end_value=config.learning_rate * config.end_learning_rate_fraction,
    )


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    transforms = []
    if config.grad_clip_norm > 0:
        transforms.append(optax.clip_by_global_norm(config.grad_clip_norm))
    transforms.append(
        optax.adamw(
            learning_rate_schedule(config),
            b1=config.adam_b1,
            b2=config.adam_b2,
            eps=config.adam_eps,
            weight_decay=config.weight_decay,
        )
    )
    return optax.chain(*transforms)


# ---------------------------------------------------------------------------------------------
# Steps.


def make_train_step(graphdef, optimizer: optax.GradientTransformation, config: Config) -> Callable:
    """Jitted `(params, opt_state, batch, step) -> (params, opt_state, metrics)`.

    The batch [B, M] splits into `grad_accum_steps` micro-batches whose gradient sums are added
    before one update, so the result does not depend on how the batch is split. Dropout keys
    are derived from (seed, step, micro-batch), so a resumed run draws the same masks.
    """
    num_latents = config.model.num_latents
    accum = config.train.grad_accum_steps
    z_loss = config.train.z_loss
    reduction = config.train.loss_reduction
    base_key = jax.random.key(config.train.seed)

    def micro_sums(params, inputs, targets, key):
        model = nnx.merge(graphdef, params)
        logits = model(inputs, num_latents=num_latents, dropout_key=key)
        return loss_sums(logits, targets[:, -num_latents:], z_loss)

    def objective(params, inputs, targets, key):
        sums = micro_sums(params, inputs, targets, key)
        return _objective(sums), sums

    grad_fn = jax.grad(objective, has_aux=True)

    def train_step(params, opt_state, batch, step):
        step_key = jax.random.fold_in(base_key, step)
        inputs = batch["inputs"].reshape(accum, -1, batch["inputs"].shape[-1])
        targets = batch["targets"].reshape(accum, -1, batch["targets"].shape[-1])

        def accumulate(carry, micro):
            grad_total, sums_total = carry
            index, micro_inputs, micro_targets = micro
            grads, sums = grad_fn(params, micro_inputs, micro_targets, jax.random.fold_in(step_key, index))
            return (
                jax.tree.map(jnp.add, grad_total, grads),
                jax.tree.map(jnp.add, sums_total, sums),
            ), None

        zero_sums = {name: jnp.zeros((), jnp.float32) for name in ("nll", "z_loss", "correct", "count")}
        zero_grads = jax.tree.map(jnp.zeros_like, params)
        (grads, sums), _ = jax.lax.scan(
            accumulate, (zero_grads, zero_sums), (jnp.arange(accum), inputs, targets)
        )

        # Mean reduction divides by the number of valid targets in the whole batch.
        count = jnp.maximum(sums["count"], 1.0)
        if reduction == "mean":
            grads = jax.tree.map(lambda g: g / count, grads)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = {
            "loss": _objective(sums) / count,
            "nll": sums["nll"] / count,
            "accuracy": sums["correct"] / count,
            "grad_norm": optax.tree.norm(grads),
            "targets": sums["count"],
        }
        return params, opt_state, metrics

    return jax.jit(train_step, donate_argnums=(0, 1))


def make_eval_step(graphdef, config: Config, num_latents: int | None = None) -> Callable:
    """Jitted `(params, batch) -> sums` with dropout off."""
    num_latents = num_latents or config.model.num_latents
    z_loss = config.train.z_loss

    def eval_step(params, batch):
        model = nnx.merge(graphdef, params)
        logits = model(batch["inputs"], num_latents=num_latents)
        return loss_sums(logits, batch["targets"][:, -num_latents:], z_loss)

    return jax.jit(eval_step)


def evaluate_batches(eval_step: Callable, params, batches: list[dict]) -> dict[str, float]:
    """NLL per target (nats and bits), perplexity and accuracy over fixed batches."""
    totals = {"nll": 0.0, "correct": 0.0, "count": 0.0}
    for batch in batches:
        sums = jax.device_get(eval_step(params, batch))
        for name in totals:
            totals[name] += float(sums[name])
    count = max(totals["count"], 1.0)
    nll = totals["nll"] / count
    return {
        "nll": nll,
        "bits": nll / math.log(2),
        "perplexity": math.exp(min(nll, 50.0)),
        "accuracy": totals["correct"] / count,
        "targets": totals["count"],
    }


def parameter_counts(params: dict) -> dict[str, int]:
    """Parameters per top-level component (embed, cross_attention, blocks, final_norm, head)."""
    return {name: int(sum(np.size(x) for x in jax.tree.leaves(value))) for name, value in params.items()}


# ---------------------------------------------------------------------------------------------
# Run directory checks.


def _check_resume_config(saved: Config, requested: Config, run_dir: Path) -> Config:
    """Resume with the saved config; only `train.steps` may differ (to extend a run)."""
    saved_values = saved.to_dict()
    requested_values = requested.to_dict()
    differences = []
    for section in ("model", "data", "train"):
        for key, value in requested_values[section].items():
            if section == "train" and key == "steps":
                continue
            if section == "model" and key == "vocab_size" and value is None:
                continue
            if saved_values[section].get(key) != value:
                differences.append(f"{section}.{key}: {saved_values[section].get(key)!r} saved, {value!r} requested")
    if differences:
        raise ConfigError(
            f"run directory {run_dir} was trained with another config ({'; '.join(differences)}); "
            "resume without --config/--set, or train into a new run directory"
        )
    return dataclasses.replace(saved, train=dataclasses.replace(saved.train, steps=requested.train.steps))


class _StopRequest:
    """Turns the first Ctrl-C (SIGINT) or SIGTERM into a flag the loop checks between steps.

    Stopping between steps matters: the step donates its input buffers, so interrupting it
    midway would leave nothing consistent to save. A second Ctrl-C interrupts at once.
    """

    def __init__(self):
        self.requested = False
        self.signal_name = ""

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        log.warning("%s received: stopping after this step and saving a checkpoint", self.signal_name)

    @contextlib.contextmanager
    def installed(self):
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


# ---------------------------------------------------------------------------------------------
# The loop.


@dataclasses.dataclass
class TrainSummary:
    run_dir: Path
    start_step: int
    step: int
    interrupted: bool
    train_loss: float | None
    validation: dict[str, float] | None
    seconds: float
    tokens_per_second: float | None


def train_and_evaluate(config: Config, run_dir: str | Path, *, progress: bool = True) -> TrainSummary:
    """Train `config` into `run_dir`, resuming from its newest checkpoint if it has one."""
    from pact.data import batch_iterator, training_dataset, validation_batches
    from pact.datasets import open_dataset
    from pact.encodings import tokenizer_from_spec

    # Reuse freed memory across steps instead of page-faulting it in again (see pact.allocator).
    # This must run before the first JAX computation of the process.
    retain_freed_memory()
    run = RunDir(run_dir)

    # 1. Configuration, dataset and tokenizer. A resumed run uses its saved config.
    if run.exists():
        config = _check_resume_config(run.read_config(), config, run.path)
    if not config.data.dataset:
        raise ConfigError("no dataset given: pass --data DATASET_DIR (written by `pact encode dataset`)")
    dataset = open_dataset(config.data.dataset)
    tokenizer = tokenizer_from_spec(dataset.tokenizer_spec, source=f"dataset {config.data.dataset}")
    if config.model.vocab_size not in (None, tokenizer.vocab_size):
        raise ConfigError(
            f"model.vocab_size={config.model.vocab_size} but the dataset's tokenizer "
            f"{tokenizer.name!r} has {tokenizer.vocab_size} ids; leave model.vocab_size unset"
        )
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, vocab_size=tokenizer.vocab_size))
    if run.exists():
        tokenizer.check_compatible(run.read_tokenizer_spec(), f"run {run.path}")
    else:
        run.write_json(run.tokenizer_path, tokenizer.spec())
        run.write_json(run.config_path, config.to_dict())
    log.info("run %s: config %s, dataset %s (tokenizer %s, %d ids)",
             run.path, config.name, config.data.dataset, tokenizer.name, tokenizer.vocab_size)

    # 2. Model, optimizer and the newest checkpoint.
    model = PerceiverAR(config.model, rngs=nnx.Rngs(config.train.seed))
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    optimizer = make_optimizer(config.train)
    opt_state = optimizer.init(params)
    log.info("model: %s parameters (%s), context %d, %d latents, %d layers, width %d",
             f"{count_parameters(model):,}",
             ", ".join(f"{name} {count:,}" for name, count in parameter_counts(params).items()),
             config.model.max_context, config.model.num_latents, config.model.num_layers,
             config.model.num_channels)
    del model, state

    checkpointer = Checkpointer(run.checkpoint_dir, keep=config.train.keep_checkpoints)
    restored = checkpointer.restore_latest(abstract_like(params), abstract_like(opt_state))
    start_step, tokens_seen = 0, 0
    if restored is not None:
        start_step, params, opt_state, restored_progress = restored
        tokens_seen = int(restored_progress.get("tokens_seen", 0))
        log.info("resuming from the checkpoint at step %d", start_step)
    _truncate_metrics(run, start_step)

    # 3. Data: batch i of the training pipeline is the batch of step i.
    batch_size = config.data.batch_size
    train_data = training_dataset(
        dataset.source(config.data.train_split), context=config.model.max_context,
        num_latents=config.model.num_latents, batch_size=batch_size, seed=config.train.seed,
    )
    eval_batches = []
    if config.train.eval_every > 0 and config.data.eval_split in dataset.splits:
        eval_batches = validation_batches(
            dataset.source(config.data.eval_split), context=config.model.max_context,
            num_latents=config.model.num_latents, batch_size=batch_size,
            num_batches=config.train.eval_batches,
        )

    train_step = make_train_step(graphdef, optimizer, config)
    eval_step = make_eval_step(graphdef, config)
    writer = _MetricsWriter(run, start_step)

    # 4. Loop.
    summary = TrainSummary(run.path, start_step, start_step, False, None, None, 0.0, None)
    stop = _StopRequest()
    started = time.perf_counter()
    step = start_step
    if start_step >= config.train.steps:
        log.info("run %s already reached step %d of %d", run.path, start_step, config.train.steps)
    with stop.installed(), _ProgressBar(progress, start_step, config.train.steps) as bar:
        batches = batch_iterator(train_data, start_step, config.data.worker_count)
        # Target tokens since the last log, summed on the device so that no step waits for it.
        window_targets = jnp.zeros((), jnp.float32)
        window_started = time.perf_counter()
        last_saved = start_step
        while step < config.train.steps and not stop.requested:
            batch = next(batches)
            params, opt_state, metrics = train_step(params, opt_state, batch, step)
            window_targets = window_targets + metrics["targets"]
            step += 1

            if step % config.train.log_every == 0 or step == config.train.steps:
                metrics = {name: float(value) for name, value in jax.device_get(metrics).items()}
                window_tokens = float(window_targets)
                tokens_seen += int(window_tokens)
                tokens_per_second = window_tokens / max(time.perf_counter() - window_started, 1e-9)
                window_targets = jnp.zeros((), jnp.float32)
                window_started = time.perf_counter()
                row = {
                    "step": step, "split": "train", "loss": metrics["loss"], "nll": metrics["nll"],
                    "accuracy": metrics["accuracy"], "grad_norm": metrics["grad_norm"],
                    "learning_rate": float(learning_rate_schedule(config.train)(step - 1)),
                    "tokens_per_second": tokens_per_second, "time": time.time(),
                }
                writer(row)
                summary.train_loss = metrics["loss"]
                summary.tokens_per_second = tokens_per_second
                bar.update(step, loss=metrics["loss"], tokens_per_second=tokens_per_second)
                if not math.isfinite(metrics["loss"]):
                    raise FloatingPointError(
                        f"training loss became {metrics['loss']} at step {step}; lower "
                        "train.learning_rate or check the data"
                    )

            if eval_batches and (step % config.train.eval_every == 0 or step == config.train.steps):
                validation = evaluate_batches(eval_step, params, eval_batches)
                writer({"step": step, "split": "validation", **validation, "time": time.time()})
                summary.validation = validation
                bar.note(f"step {step}: validation NLL {validation['nll']:.4f} nats/event")

            if step % config.train.checkpoint_every == 0:
                progress_now = {"step": step, "tokens_seen": tokens_seen + int(window_targets)}
                checkpointer.save(step, params, opt_state, progress_now)
                last_saved = step

        # 5. Final checkpoint, also after Ctrl-C or SIGTERM.
        if step != last_saved:
            progress_now = {"step": step, "tokens_seen": tokens_seen + int(window_targets)}
            checkpointer.save(step, params, opt_state, progress_now)
    checkpointer.close()
    writer.close()

    summary.step = step
    summary.interrupted = stop.requested
    summary.seconds = time.perf_counter() - started
    if stop.requested:
        log.warning("stopped by %s at step %d; run `pact train %s` to resume", stop.signal_name, step, run.path)
    return summary


# ---------------------------------------------------------------------------------------------
# Metrics output and progress.


def _truncate_metrics(run: RunDir, step: int) -> None:
    """Drop metric rows after `step`: a resumed run logs those steps again."""
    rows = run.read_metrics()
    kept = [row for row in rows if row.get("step", 0) <= step]
    if len(kept) != len(rows) or (run.metrics_path.exists() and not rows):
        temporary = run.metrics_path.with_suffix(".jsonl.tmp")
        temporary.write_text("".join(json.dumps(row) + "\n" for row in kept))
        temporary.replace(run.metrics_path)


class _MetricsWriter:
    """Appends rows to metrics.jsonl and mirrors them as TensorBoard scalars."""

    def __init__(self, run: RunDir, start_step: int):
        from tensorboardX import SummaryWriter

        run.path.mkdir(parents=True, exist_ok=True)
        self.file = open(run.metrics_path, "a")  # noqa: SIM115 - closed in close()
        # purge_step hides events that a crashed run wrote after its last checkpoint.
        self.tensorboard = SummaryWriter(str(run.tensorboard_dir), purge_step=start_step or None)

    def __call__(self, row: dict[str, Any]) -> None:
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        for name, value in row.items():
            if name not in ("step", "split", "time") and isinstance(value, float):
                self.tensorboard.add_scalar(f"{row['split']}/{name}", value, row["step"])

    def close(self) -> None:
        self.file.close()
        self.tensorboard.close()


class _ProgressBar:
    """A Rich progress line (step, loss, target tokens/s, ETA) or, without a terminal, log lines."""

    def __init__(self, enabled: bool, start_step: int, total_steps: int):
        self.enabled = enabled
        self.total_steps = total_steps
        self.progress = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} tok/s"),
                TimeRemainingColumn(), console=Console(stderr=True), transient=False,
            )
            self.task = self.progress.add_task("train", total=total_steps, completed=start_step,
                                               loss="-", speed="-")

    def __enter__(self):
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()

    def update(self, step: int, *, loss: float, tokens_per_second: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step, loss=f"{loss:.4f}", speed=f"{tokens_per_second:,.0f}")
        else:
            log.info("step %d/%d: loss %.4f, %.0f target tokens/s", step, self.total_steps, loss, tokens_per_second)

    def note(self, message: str) -> None:
        if self.progress is not None:
            self.progress.console.print(message)
        else:
            log.info(message)




