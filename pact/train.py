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

from jax.sharding import NamedSharding, PartitionSpec

from pact import distributed
from pact.allocator import retain_freed_memory
from pact.checkpoint import Checkpointer
from pact.config import Config, TrainConfig
from pact.errors import ConfigError, DistributedError
from pact.model import PAD_ID, PerceiverAR, count_parameters
from pact.run import BUNDLED_MODEL, RunDir
from pact.sharding import (
    BATCH_AXES, DATA_AXIS, FSDP_AXIS, StepShardings, gather_parameters, with_shardings,
)

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


def micro_batches(x: jax.Array, accum: int) -> jax.Array:
    """Split a batch [B, ...] into [A, B / A, ...]: micro-batch k is rows k, k + A, k + 2A, ...

    A mesh stores a batch in contiguous blocks of B / D rows per device, and A divides B / D,
    so each device already has its B / (A * D) rows of every micro-batch. The split therefore
    moves no data, and which rows form a micro-batch does not depend on the device count.
    """
    return x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1)


def make_train_step(graphdef, optimizer: optax.GradientTransformation, config: Config,
                    shardings: StepShardings | None = None) -> Callable:
    """Jitted `(params, opt_state, batch, step) -> (params, opt_state, metrics)`.

    The batch holds `inputs` and `targets` [B, M], and `positions` [B, M] (`pact.data`),
    which only a model with axis embeddings requires. The batch splits into `grad_accum_steps` micro-batches (see `micro_batches`) whose
    gradient sums are added before one update, so the result does not depend on how the batch
    is split. Dropout keys are derived from (seed, step, micro-batch), so a resumed run draws
    the same masks. Inputs and outputs keep the layouts in `shardings` (default: one device);
    metrics are replicated scalars.

    Pass `params` and `opt_state` already laid out on `shardings.mesh`, as `train_and_evaluate`
    does. Arrays from elsewhere cost a second compilation on the second call, because the
    outputs fed back then carry the mesh in their types.
    """
    shardings = shardings or StepShardings.single_device()
    micro_batch_sharding = NamedSharding(shardings.mesh, PartitionSpec(None, BATCH_AXES))
    num_latents = config.model.num_latents
    accum = config.train.grad_accum_steps
    z_loss = config.train.z_loss
    reduction = config.train.loss_reduction
    base_key = jax.random.key(config.train.seed)

    def micro_sums(params, inputs, positions, targets, key):
        model = nnx.merge(graphdef, gather_parameters(params, shardings))
        logits = model(inputs, positions=positions, num_latents=num_latents, dropout_key=key)
        return loss_sums(logits, targets[:, -num_latents:], z_loss)

    def objective(params, inputs, positions, targets, key):
        sums = micro_sums(params, inputs, positions, targets, key)
        return _objective(sums), sums

    grad_fn = jax.grad(objective, has_aux=True)

    def train_step(params, opt_state, batch, step):
        step_key = jax.random.fold_in(base_key, step)

        def split(array):
            return jax.lax.with_sharding_constraint(micro_batches(array, accum), micro_batch_sharding)

        inputs, targets = split(batch["inputs"]), split(batch["targets"])
        positions = split(batch["positions"]) if "positions" in batch else None

        def accumulate(carry, micro):
            grad_total, sums_total = carry
            index, micro_inputs, micro_positions, micro_targets = micro
            grads, sums = grad_fn(params, micro_inputs, micro_positions, micro_targets,
                                  jax.random.fold_in(step_key, index))
            # With FSDP each device keeps only its slice of the gradient sums.
            grads = jax.lax.with_sharding_constraint(grads, shardings.params)
            return (
                jax.tree.map(jnp.add, grad_total, grads),
                jax.tree.map(jnp.add, sums_total, sums),
            ), None

        zero_sums = {name: jnp.zeros((), jnp.float32) for name in ("nll", "z_loss", "correct", "count")}
        zero_grads = jax.tree.map(jnp.zeros_like, params)
        (grads, sums), _ = jax.lax.scan(
            accumulate, (zero_grads, zero_sums), (jnp.arange(accum), inputs, positions, targets)
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

    return jax.jit(
        train_step,
        in_shardings=(shardings.params, shardings.opt_state, shardings.batch, shardings.replicated),
        out_shardings=(shardings.params, shardings.opt_state, shardings.replicated),
        donate_argnums=(0, 1),
    )


def make_eval_step(graphdef, config: Config, num_latents: int | None = None,
                   shardings: StepShardings | None = None) -> Callable:
    """Jitted `(params, batch) -> sums` with dropout off; the sums are replicated scalars."""
    shardings = shardings or StepShardings.single_device()
    num_latents = num_latents or config.model.num_latents
    z_loss = config.train.z_loss

    def eval_step(params, batch):
        model = nnx.merge(graphdef, gather_parameters(params, shardings))
        logits = model(batch["inputs"], positions=batch.get("positions"), num_latents=num_latents)
        return loss_sums(logits, batch["targets"][:, -num_latents:], z_loss)

    return jax.jit(eval_step, in_shardings=(shardings.params, shardings.batch),
                   out_shardings=shardings.replicated)


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


# Train keys a resumed run may change: the step count (to extend a run) and the mesh (to
# resume on another topology).
_RESUME_CHANGEABLE = ("steps", "mesh_data", "mesh_fsdp")


# Model keys that a new run takes from its dataset's tokenizer when they are None.
_FILLED_FROM_TOKENIZER = ("vocab_size", "axis_embeddings", "position_axes")


def _check_resume_config(saved: Config, requested: Config, run_dir: Path) -> Config:
    """Resume with the saved config; only `train.steps` and the mesh may differ."""
    saved_values = saved.to_dict()
    requested_values = requested.to_dict()
    differences = []
    for section in ("model", "data", "train"):
        for key, value in requested_values[section].items():
            if section == "train" and key in _RESUME_CHANGEABLE:
                continue
            # Training fills these in from the dataset's tokenizer when they are unset.
            if section == "model" and key in _FILLED_FROM_TOKENIZER and value is None:
                continue
            if saved_values[section].get(key) != value:
                differences.append(f"{section}.{key}: {saved_values[section].get(key)!r} saved, {value!r} requested")
    if differences:
        raise ConfigError(
            f"run directory {run_dir} was trained with another config ({'; '.join(differences)}); "
            "resume without --config/--set, or train into a new run directory"
        )
    changes = {key: getattr(requested.train, key) for key in _RESUME_CHANGEABLE}
    return dataclasses.replace(saved, train=dataclasses.replace(saved.train, **changes))


class _StopRequest:
    """Turns the first Ctrl-C (SIGINT) or SIGTERM into a flag the loop checks between steps.

    Stopping between steps matters: the step donates its input buffers, so interrupting it
    midway would leave nothing consistent to save. A second Ctrl-C interrupts at once.

    In a multi-process run every process must stop after the same step, because each step and
    checkpoint is a collective. SIGTERM, the usual preemption notice, is then left to JAX's
    preemption handler, and `distributed.preemption_sync_point` makes every process stop at the
    same step. Ctrl-C flags are compared across processes every `check_every` steps.
    """

    def __init__(self, process_count: int = 1, check_every: int = 1):
        self.requested = False
        self.signal_name = ""
        self.process_count = process_count
        self.check_every = check_every

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        if self.process_count == 1:
            when = "after this step"
        else:
            when = f"with every process at the next multiple of {self.check_every} steps"
        log.warning("%s received: stopping %s and saving a checkpoint", self.signal_name, when)

    def agreed(self, step: int) -> bool:
        """Whether to stop before `step`; every process must call this before every step."""
        if self.process_count == 1:
            return self.requested
        if distributed.preemption_sync_point(step):
            self.signal_name = self.signal_name or "SIGTERM"
            return True
        return step % self.check_every == 0 and distributed.any_process(self.requested)

    @contextlib.contextmanager
    def installed(self):
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        signals = (signal.SIGINT, signal.SIGTERM) if self.process_count == 1 else (signal.SIGINT,)
        previous = {sig: signal.signal(sig, self._handle) for sig in signals}
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
    token_unit: str = "token"  # unit of one target in printed metrics: "event", "byte", ...


def train_and_evaluate(config: Config, run_dir: str | Path, *, progress: bool = True,
                       devices: list[jax.Device] | None = None) -> TrainSummary:
    """Train `config` into `run_dir`, resuming from its newest checkpoint if it has one.

    The mesh spans `devices` (default: every device of every process), shaped by
    `train.mesh_data` and `train.mesh_fsdp`. In a multi-process run every process calls this
    with the same arguments. Process 0 alone writes the config, metrics, TensorBoard events and
    progress, and every process writes its shards of each checkpoint.
    """
    # Reuse freed memory across steps instead of page-faulting it in again (see pact.allocator).
    # It helps only if no JAX computation ran in this process before.
    retain_freed_memory()
    with _peer_failures_raised():
        return _train_and_evaluate(config, RunDir(run_dir), progress, devices)


def _train_and_evaluate(config: Config, run: RunDir, progress: bool,
                        devices: list[jax.Device] | None) -> TrainSummary:
    from pact.data import batch_iterator, training_dataset, validation_batches
    from pact.sharding import global_batch, process_rows

    primary = distributed.is_primary()

    # 1. Configuration, dataset, tokenizer and mesh. A resumed run uses its saved config.
    config, dataset, tokenizer, mesh = _open_run(config, run, primary, devices)
    batch_size = config.data.batch_size
    log.info("mesh %dx%d (data x fsdp) over %d devices in %d processes: %d sequences per device "
             "per step in %d micro-batches", mesh.shape[DATA_AXIS], mesh.shape[FSDP_AXIS], mesh.size,
             distributed.process_count(), batch_size // mesh.size, config.train.grad_accum_steps)

    # 2. Model, optimizer and the newest checkpoint, laid out on the mesh.
    optimizer = make_optimizer(config.train)
    checkpointer = Checkpointer(run.checkpoint_dir, keep=config.train.keep_checkpoints)
    graphdef, params, opt_state, shardings, start_step, tokens_seen = _initial_state(
        config, optimizer, mesh, checkpointer
    )
    if primary:
        _truncate_metrics(run, start_step)

    # 3. Data: batch i of the training pipeline is the batch of step i. Each process loads
    #    only the rows of each batch that its own devices hold.
    rows = process_rows(shardings.batch, batch_size)
    train_data = training_dataset(
        dataset.source(config.data.train_split), context=config.model.max_context,
        num_latents=config.model.num_latents, batch_size=batch_size, seed=config.train.seed, rows=rows,
        crop=config.data.crop,
    )
    eval_batches = []
    if config.train.eval_every > 0 and config.data.eval_split in dataset.splits:
        local_batches = validation_batches(
            dataset.source(config.data.eval_split), context=config.model.max_context,
            num_latents=config.model.num_latents, batch_size=batch_size,
            num_batches=config.train.eval_batches, rows=rows, crop=config.data.crop,
        )
        eval_batches = [global_batch(batch, shardings.batch, batch_size) for batch in local_batches]

    train_step = make_train_step(graphdef, optimizer, config, shardings)
    eval_step = make_eval_step(graphdef, config, shardings=shardings)
    writer = _MetricsWriter(run, start_step) if primary else _NoMetricsWriter()

    # 4. Loop.
    summary = TrainSummary(run.path, start_step, start_step, False, None, None, 0.0, None,
                           token_unit=tokenizer.token_unit)
    stop = _StopRequest(distributed.process_count(), config.train.log_every)
    started = time.perf_counter()
    step = start_step
    stopped = False
    if start_step >= config.train.steps:
        log.info("run %s already reached step %d of %d", run.path, start_step, config.train.steps)
    try:
        with stop.installed(), _ProgressBar(progress and primary, start_step, config.train.steps) as bar:
            batches = batch_iterator(train_data, start_step, config.data.worker_count)
            throughput = _Throughput(tokens_seen)
            last_saved = start_step
            while step < config.train.steps:
                if stop.agreed(step):
                    stopped = True
                    break
                batch = global_batch(next(batches), shardings.batch, batch_size)
                params, opt_state, metrics = train_step(params, opt_state, batch, step)
                throughput.add(metrics["targets"])
                step += 1
                if step == start_step + 1:
                    jax.block_until_ready(metrics)
                    log.info("compiled and ran the first step in %.1f s", time.perf_counter() - started)
                    throughput.restart()

                if step % config.train.log_every == 0 or step == config.train.steps:
                    metrics = {name: float(value) for name, value in jax.device_get(metrics).items()}
                    summary.tokens_per_second = throughput.read() or summary.tokens_per_second
                    summary.train_loss = metrics["loss"]
                    writer({
                        "step": step, "split": "train", "loss": metrics["loss"], "nll": metrics["nll"],
                        "accuracy": metrics["accuracy"], "grad_norm": metrics["grad_norm"],
                        "learning_rate": float(learning_rate_schedule(config.train)(step - 1)),
                        "tokens_per_second": summary.tokens_per_second, "time": time.time(),
                    })
                    bar.update(step, loss=metrics["loss"], tokens_per_second=summary.tokens_per_second)
                    if not math.isfinite(metrics["loss"]):
                        raise FloatingPointError(
                            f"training loss became {metrics['loss']} at step {step}; lower "
                            "train.learning_rate or check the data"
                        )

                if eval_batches and (step % config.train.eval_every == 0 or step == config.train.steps):
                    summary.validation = evaluate_batches(eval_step, params, eval_batches)
                    writer({"step": step, "split": "validation", **summary.validation, "time": time.time()})
                    bar.note(f"step {step}: validation NLL {summary.validation['nll']:.4f} "
                             f"nats/{summary.token_unit}")
                    throughput.restart()

                if step % config.train.checkpoint_every == 0:
                    throughput.restart()
                    checkpointer.save(step, params, opt_state, {"step": step, "tokens_seen": throughput.tokens_seen})
                    last_saved = step
                    throughput.restart()

            # 5. Final checkpoint, also after Ctrl-C or SIGTERM.
            if step != last_saved:
                throughput.restart()
                checkpointer.save(step, params, opt_state, {"step": step, "tokens_seen": throughput.tokens_seen})
    finally:
        checkpointer.close()
        writer.close()

    summary.step = step
    summary.interrupted = stopped
    summary.seconds = time.perf_counter() - started
    if stopped:
        reason = stop.signal_name or "Ctrl-C in another process"
        log.warning("stopped by %s at step %d; run `pact train %s` to resume", reason, step, run.path)
    return summary


def _open_run(config: Config, run: RunDir, primary: bool, devices: list[jax.Device] | None):
    """Resolve the config of a new or resumed run, open its dataset and build its mesh.

    Process 0 then writes the config and tokenizer spec of a new run, once every check has
    passed. Returns (config, dataset, tokenizer, mesh).
    """
    from pact.datasets import open_dataset
    from pact.encodings import tokenizer_from_spec
    from pact.sharding import check_batch_size, make_mesh

    # Every process decides whether to resume before process 0 writes the run's files.
    resuming = run.exists()
    distributed.barrier("pact: run directory checked")
    if resuming:
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
    shortfall = _copy_context_shortfall(config, dataset.metadata)
    if shortfall:
        log.warning("%s", shortfall)
    if not resuming:
        # A resumed run keeps its saved choice: one saved before the option existed stays off.
        config = _resolve_axis_embeddings(config, tokenizer, config.data.dataset)
        if config.train.init_from:
            source = RunDir(init_source_dir(config.train.init_from)).require()
            tokenizer.check_compatible(source.read_tokenizer_spec(), f"train.init_from={config.train.init_from}")
    mesh = make_mesh(config.train.mesh_data, config.train.mesh_fsdp, devices)
    check_batch_size(mesh, config.data.batch_size, config.train.grad_accum_steps)
    if resuming:
        tokenizer.check_compatible(run.read_tokenizer_spec(), f"run {run.path}")
        # A new step count or mesh is saved, so a later resume without flags keeps the same
        # learning-rate schedule and `pact info` shows the target.
        if primary and run.read_config().to_dict() != config.to_dict():
            run.write_json(run.config_path, config.to_dict())
    elif primary:
        run.write_json(run.tokenizer_path, tokenizer.spec())
        run.write_json(run.config_path, config.to_dict())
    log.info("run %s: config %s, dataset %s (tokenizer %s, %d ids)",
             run.path, config.name, config.data.dataset, tokenizer.name, tokenizer.vocab_size)
    if config.model.position_axes is not None:
        log.info("axis embeddings on: learned position embeddings for each axis of the grid %s "
                 "(model.position_axes); set model.axis_embeddings=false in a new run to leave them off",
                 "x".join(str(size) for size in config.model.position_axes))
    return config, dataset, tokenizer, mesh


def _copy_context_shortfall(config: Config, metadata: dict) -> str | None:
    """Explain why the context cannot reach every source of a copy-task dataset, or return None."""
    from pact.encodings.copy_task import context_shortfall_message

    source = metadata.get("input") or {}
    if source.get("layout") != "copy_task" or not isinstance(source.get("length"), int):
        return None
    return context_shortfall_message(source["length"], config.model.max_context)


def _resolve_axis_embeddings(config: Config, tokenizer, dataset: str) -> Config:
    """Decide `model.axis_embeddings` of a new run and set `model.position_axes` to match.

    Unset, the embeddings are on when the dataset's tokenizer has `position_axes`. The grid
    shape always comes from the tokenizer, so a run's tokenizer fixes the table sizes.
    """
    model = config.model
    axes = tokenizer.position_axes
    enabled = axes is not None if model.axis_embeddings is None else model.axis_embeddings
    if enabled and axes is None:
        raise ConfigError(
            f"model.axis_embeddings=true but the tokenizer {tokenizer.name!r} of dataset {dataset} "
            "has no position_axes (its documents are plain sequences); leave model.axis_embeddings unset"
        )
    if model.position_axes is not None and model.position_axes != axes:
        raise ConfigError(
            f"model.position_axes={list(model.position_axes)} does not match the grid "
            f"{list(axes) if axes else None} of the tokenizer {tokenizer.name!r} of dataset {dataset}; "
            "leave model.position_axes unset, training takes it from the tokenizer"
        )
    position_axes = tuple(axes) if enabled else None
    return dataclasses.replace(
        config, model=dataclasses.replace(model, axis_embeddings=enabled, position_axes=position_axes)
    )


def _initial_state(config: Config, optimizer: optax.GradientTransformation, mesh, checkpointer: Checkpointer):
    """Restore the newest checkpoint into the mesh's layout, or initialise a new model on it.

    Returns (graphdef, params, opt_state, shardings, start_step, tokens_seen). Parameters are
    created inside a jitted function with sharded outputs, so they are never gathered on one
    device. A checkpoint written on any other mesh restores straight into this one's layout.
    """

    def create_model():
        return PerceiverAR(config.model, rngs=nnx.Rngs(config.train.seed))

    abstract_model = nnx.eval_shape(create_model)
    graphdef, abstract_state = nnx.split(abstract_model)
    abstract_params = nnx.to_pure_dict(abstract_state)
    abstract_opt_state = jax.eval_shape(optimizer.init, abstract_params)
    shardings = StepShardings.for_trees(mesh, abstract_params, abstract_opt_state)
    log.info("model: %s parameters (%s), context %d, %d latents, %d layers, width %d",
             f"{count_parameters(abstract_model):,}",
             ", ".join(f"{name} {count:,}" for name, count in parameter_counts(abstract_params).items()),
             config.model.max_context, config.model.num_latents, config.model.num_layers,
             config.model.num_channels)

    restored = checkpointer.restore_latest(
        with_shardings(abstract_params, shardings.params),
        with_shardings(abstract_opt_state, shardings.opt_state),
        # NOTE: only process 0 renames damaged steps; in a multi-process run the others keep
        # their list of steps until they restart, which has not been tested.
        set_aside_damaged=distributed.is_primary(),
    )
    if restored is not None:
        start_step, params, opt_state, restored_progress = restored
        log.info("resuming from the checkpoint at step %d", start_step)
        return graphdef, params, opt_state, shardings, start_step, int(restored_progress.get("tokens_seen", 0))

    if config.train.init_from:
        params = jax.device_put(initial_parameters(config.train.init_from, abstract_params), shardings.params)
        opt_state = jax.jit(optimizer.init, out_shardings=shardings.opt_state)(params)
        return graphdef, params, opt_state, shardings, 0, 0

    def create_state():
        params = nnx.to_pure_dict(nnx.state(create_model()))
        return params, optimizer.init(params)

    params, opt_state = jax.jit(create_state, out_shardings=(shardings.params, shardings.opt_state))()
    return graphdef, params, opt_state, shardings, 0, 0


def init_source_dir(init_from: str) -> Path:
    """Resolve `train.init_from` to a folder: a run, an exported model or the bundled model."""
    from pact.run import resolve_run_dir

    return resolve_run_dir(None if init_from == BUNDLED_MODEL else init_from)


def initial_parameters(init_from: str, abstract_params: dict) -> dict:
    """Load the newest parameters of `init_from` as host arrays shaped like `abstract_params`.

    Raises `ConfigError` naming the parameters that differ when the source contains another model.
    """
    from pact.checkpoint import parameter_shapes, shape_differences
    from pact.run import load_model

    loaded = load_model(init_source_dir(init_from))
    params = nnx.to_pure_dict(nnx.state(loaded.model))
    differences = shape_differences(parameter_shapes(params), parameter_shapes(abstract_params))
    if differences:
        raise ConfigError(
            f"train.init_from={init_from} is a different model ({len(differences)} parameters differ, "
            f"for example {'; '.join(differences[:3])}); train with its model settings, which "
            f"`pact info {init_from}` lists"
        )
    log.info("starting from the parameters of %s at step %d; the step count and optimizer start afresh",
             init_from, loaded.step)
    return jax.tree.map(lambda value, abstract: np.asarray(value, abstract.dtype), params, abstract_params)


@contextlib.contextmanager
def _peer_failures_raised():
    """In a multi-process run, turn a failed collective into a `DistributedError`.

    A collective fails this way when a peer process died or its connection broke. JAX may
    instead end this process itself once the peer misses its heartbeats. The error keeps
    XLA's message, which names any other cause.
    """
    if distributed.process_count() == 1:
        yield
        return
    try:
        yield
    except jax.errors.JaxRuntimeError as error:
        raise DistributedError(
            f"process {distributed.process_index()} of {distributed.process_count()}: a collective "
            f"operation with the other processes failed ({error}). Usually another process died or "
            "lost its network connection: restart every process with the same command to resume "
            "from the newest checkpoint"
        ) from error


# ---------------------------------------------------------------------------------------------
# Metrics output and progress.


class _Throughput:
    """Target tokens per second of training steps alone.

    Compilation, validation and checkpoints call `restart`, which counts their tokens but
    starts a new timing window. Tokens are summed on the device so that no step waits.
    """

    def __init__(self, tokens_seen: int):
        self.tokens_seen = tokens_seen
        self._pending = jnp.zeros((), jnp.float32)
        self._steps = 0
        self._started = time.perf_counter()

    def add(self, targets: jax.Array) -> None:
        self._pending = self._pending + targets
        self._steps += 1

    def _collect(self) -> tuple[int, int, float]:
        tokens, steps = int(self._pending), self._steps
        elapsed = time.perf_counter() - self._started
        self.tokens_seen += tokens
        self._pending = jnp.zeros((), jnp.float32)
        self._steps = 0
        self._started = time.perf_counter()
        return tokens, steps, elapsed

    def restart(self) -> None:
        self._collect()

    def read(self) -> float | None:
        """Tokens per second since the last read or restart; None if no step ran in between."""
        tokens, steps, elapsed = self._collect()
        return tokens / max(elapsed, 1e-9) if steps else None


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
        # Closing flushes; on a full device that fails too, and the error in flight says why.
        for closable in (self.file, self.tensorboard):
            try:
                closable.close()
            except OSError as error:
                log.warning("could not flush the metrics of %s: %s", self.file.name, error)


class _NoMetricsWriter:
    """A `_MetricsWriter` stand-in that drops every row, for processes other than process 0."""

    def __call__(self, row: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


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

    def update(self, step: int, *, loss: float, tokens_per_second: float | None) -> None:
        speed = "-" if tokens_per_second is None else f"{tokens_per_second:,.0f}"
        if self.progress is not None:
            self.progress.update(self.task, completed=step, loss=f"{loss:.4f}", speed=speed)
        else:
            log.info("step %d/%d: loss %.4f, %s target tokens/s", step, self.total_steps, loss, speed)

    def note(self, message: str) -> None:
        if self.progress is not None:
            self.progress.console.print(message)
        else:
            log.info(message)




