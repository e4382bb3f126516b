"""Strided (block) evaluation of whole documents.

Each document is read as [EOS] + tokens, and every token after the leading EOS is a target,
scored exactly once. The targets are tiled into blocks of W <= N consecutive positions; a block
ending at target position b is scored by the last W latents of one forward pass whose input is
the up to M tokens before b, so every target sees between M - W + 1 and M tokens of context
(fewer near the start of a document). W = N is the cheapest setting; W = 1 gives every target
the full context at N times the cost. Blocks are tiled from the document's start, or from its
end (`align="end"`), which matches a model trained on windows that end there (`data.crop=end`):
the copy task's mirrored half then falls in one block laid out as in training.

Reported per split: NLL per token in nats and bits, perplexity, next-token accuracy, and the
NLL and accuracy bucketed by the target's position in its document (0-512, 512-1024,
1024-2048, ...), which shows whether long context is used. The tokenizer's modality adds
bits per byte (text), bits per dimension (images) or mirrored-half accuracy (copy task); see
`pact.benchmark_metrics`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pact.benchmark_metrics import DocumentScores, metrics_for
from pact.data import PAD_ID, with_start
from pact.errors import ConfigError
from pact.sharding import StepShardings, check_batch_size, gather_parameters, global_batch, process_rows

FIRST_BUCKET = 512


def bucket_edges(max_position: int) -> list[int]:
    """Bucket boundaries 0, 512, 1024, 2048, ... up to past `max_position`."""
    edges = [0, FIRST_BUCKET]
    while edges[-1] <= max_position:
        edges.append(edges[-1] * 2)
    return edges


@dataclasses.dataclass
class Window:
    inputs: np.ndarray  # [M] int32, left-padded
    input_positions: np.ndarray  # [M] int32, index of each input in [EOS] + tokens, below 0 for padding
    targets: np.ndarray  # [M] int32, PAD except the W scored positions
    positions: np.ndarray  # [M] int32, position in the document of each target, -1 if none
    document: int = -1  # index of the document in its source, -1 for padding


ALIGNMENTS = ("start", "end")


def block_ranges(length: int, block_size: int, align: str = "start") -> list[tuple[int, int]]:
    """Split target indices 1 .. length - 1 into blocks [first, last] of at most `block_size`.

    "start" makes every block but the last full, "end" every block but the first.
    """
    if align == "start":
        return [(first, min(first + block_size - 1, length - 1)) for first in range(1, length, block_size)]
    return [(max(1, last - block_size + 1), last) for last in range(length - 1, 0, -block_size)][::-1]


def document_windows(tokens: np.ndarray, context: int, block_size: int, document: int = -1,
                     align: str = "start") -> Iterator[Window]:
    """Windows that together score every target of one document once, in blocks aligned by `align`."""
    sequence = with_start(tokens)
    length = len(sequence)
    # Targets are sequence[1:]; block [first, last] is scored from the inputs before `last`.
    for first, last in block_ranges(length, block_size, align):
        start = max(0, last - context)
        inputs = sequence[start:last]
        scored = last - first + 1
        window_inputs = np.full(context, PAD_ID, np.int32)
        window_targets = np.full(context, PAD_ID, np.int32)
        window_positions = np.full(context, -1, np.int32)
        window_inputs[context - len(inputs):] = inputs
        window_targets[context - scored:] = sequence[first:last + 1]
        window_positions[context - scored:] = np.arange(first, last + 1)
        # The last input is sequence[last - 1], so column c contains index c + last - M.
        input_positions = np.arange(context, dtype=np.int32) + np.int32(last - context)
        yield Window(window_inputs, input_positions, window_targets, window_positions, document)


def _batches(source, context: int, block_size: int, batch_size: int, align: str) -> Iterator[dict[str, np.ndarray]]:
    pending: list[Window] = []
    for index in range(len(source)):
        for window in document_windows(np.asarray(source[index]["tokens"]), context, block_size, index, align):
            pending.append(window)
            if len(pending) == batch_size:
                yield _stack(pending, batch_size)
                pending = []
    if pending:
        yield _stack(pending, batch_size)


def _stack(windows: list[Window], batch_size: int) -> dict[str, np.ndarray]:
    # Pad the last batch with empty windows so that every batch has one shape (one compile).
    context = len(windows[0].inputs)
    empty = Window(np.full(context, PAD_ID, np.int32), np.full(context, -1, np.int32),
                   np.full(context, PAD_ID, np.int32), np.full(context, -1, np.int32))
    windows = windows + [empty] * (batch_size - len(windows))
    return {
        "inputs": np.stack([w.inputs for w in windows]),
        "input_positions": np.stack([w.input_positions for w in windows]),
        "targets": np.stack([w.targets for w in windows]),
        "positions": np.stack([w.positions for w in windows]),
        "documents": np.asarray([w.document for w in windows], np.int64),
    }


def make_score_step(model, num_latents: int, shardings: StepShardings | None = None) -> Callable:
    """Jitted (params, inputs [B, M], input_positions [B, M], targets [B, N]) -> (nll [B, N],
    correct [B, N]); 0 where padding.

    `params` is the model's state as a pure dict. `input_positions` are the inputs' indices in
    their documents (see `Window`). With `shardings`, the batch arrays are split by rows over
    the mesh and the outputs are replicated, so every process reads all rows.
    """
    graphdef, _ = nnx.split(model)
    shardings = shardings or StepShardings.single_device()

    def score(params, inputs, input_positions, targets):
        model = nnx.merge(graphdef, gather_parameters(params, shardings))
        logits = model(inputs, positions=input_positions, num_latents=num_latents)
        mask = targets != PAD_ID
        log_normaliser = jax.nn.logsumexp(logits, axis=-1)
        target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
        nll = jnp.where(mask, log_normaliser - target_logits, 0.0)
        correct = jnp.where(mask, jnp.argmax(logits, axis=-1) == targets, False)
        return nll, correct

    return jax.jit(
        score,
        in_shardings=(shardings.params, shardings.batch, shardings.batch, shardings.batch),
        out_shardings=(shardings.replicated, shardings.replicated),
    )


@dataclasses.dataclass
class EvalResult:
    split: str
    documents: int
    targets: int
    nll: float  # nats per target
    bits: float  # bits per target
    perplexity: float  # exp(nll), per target
    accuracy: float
    num_latents: int
    block_size: int
    context: int
    align: str  # "start" or "end": where the blocks of each document are tiled from
    buckets: list[dict]  # {"start", "end", "targets", "nll", "bits", "accuracy"} per position bucket
    token_unit: str = "token"  # unit of one target: "event", "sub-pixel", ...
    modality: str | None = None
    modality_metrics: dict = dataclasses.field(default_factory=dict)
    """Metrics of the modality (`pact.benchmark_metrics`), for example {"bits_per_byte": ...}."""

    def to_dict(self) -> dict:
        """Return the result as a flat dict: the modality metrics sit beside `nll`."""
        values = dataclasses.asdict(self)
        values.update(values.pop("modality_metrics"))
        return values


def evaluate_source(model, source, *, split: str, num_latents: int | None = None,
                    block_size: int | None = None, batch_size: int = 8, align: str = "start",
                    on_batch: Callable[[int], None] | None = None, tokenizer=None,
                    mesh=None) -> EvalResult:
    """Score every target of every document in `source` (see the module docstring).

    `tokenizer`, the one that made the source, selects the modality metrics; without it only
    the metrics per target are computed. With `mesh` (the `jax.sharding.Mesh` that
    `load_model` laid the parameters out on), each batch is split by rows over its devices. In
    a multi-process run every process calls this with the same arguments and returns the same
    result.
    """
    config = model.config
    context = config.max_context
    num_latents = num_latents or config.num_latents
    block_size = block_size or num_latents
    if not 1 <= num_latents <= context:
        raise ConfigError(f"--latents={num_latents} is invalid: use 1 to the context length {context}")
    if not 1 <= block_size <= num_latents:
        raise ConfigError(
            f"--block-size={block_size} is invalid: use 1 to the number of latents ({num_latents})"
        )
    if align not in ALIGNMENTS:
        raise ConfigError(f"--align={align!r} is invalid: use {' or '.join(ALIGNMENTS)}")

    params = nnx.to_pure_dict(nnx.state(model))
    if mesh is None:
        shardings = StepShardings.single_device()
    else:
        check_batch_size(mesh, batch_size, name="--batch-size")
        shardings = StepShardings.for_trees(mesh, params)
    score = make_score_step(model, num_latents, shardings)
    # Every process builds every window (for the positions) and places only its own rows.
    rows = process_rows(shardings.batch, batch_size)
    max_position = max((len(source[i]["tokens"]) for i in range(len(source))), default=0)
    edges = bucket_edges(max_position)
    bucket_nll = np.zeros(len(edges) - 1)
    bucket_correct = np.zeros(len(edges) - 1, np.int64)
    bucket_count = np.zeros(len(edges) - 1, np.int64)
    total_nll, total_correct, total_count = 0.0, 0, 0
    document_metrics = metrics_for(tokenizer)
    document_scores = DocumentScores(source, document_metrics) if document_metrics else None

    for batch in _batches(source, context, block_size, batch_size, align):
        local = {"inputs": batch["inputs"][rows], "input_positions": batch["input_positions"][rows],
                 "targets": batch["targets"][rows, -num_latents:]}
        placed = global_batch(local, shardings.batch, batch_size)
        nll, correct = score(params, placed["inputs"], placed["input_positions"], placed["targets"])
        nll, correct = np.asarray(nll, np.float64), np.asarray(correct)
        positions = batch["positions"][:, -num_latents:]
        scored = positions >= 0
        total_nll += float(nll[scored].sum())
        total_correct += int(correct[scored].sum())
        total_count += int(scored.sum())
        bucket = np.searchsorted(edges, positions[scored], side="right") - 1
        np.add.at(bucket_nll, bucket, nll[scored])
        np.add.at(bucket_correct, bucket, correct[scored])
        np.add.at(bucket_count, bucket, 1)
        if document_scores is not None:
            documents = np.broadcast_to(batch["documents"][:, None], positions.shape)
            document_scores.add(documents[scored], positions[scored], nll[scored], correct[scored])
        if on_batch is not None:
            on_batch(int(scored.sum()))

    mean_nll = total_nll / max(total_count, 1)
    buckets = [
        {"start": edges[i], "end": edges[i + 1], "targets": int(bucket_count[i]),
         "nll": float(bucket_nll[i] / bucket_count[i]),
         "bits": float(bucket_nll[i] / bucket_count[i] / math.log(2)),
         "accuracy": float(bucket_correct[i] / bucket_count[i])}
        for i in range(len(bucket_count)) if bucket_count[i] > 0
    ]
    return EvalResult(
        split=split, documents=len(source), targets=total_count, nll=mean_nll,
        bits=mean_nll / math.log(2), perplexity=math.exp(min(mean_nll, 50.0)),
        accuracy=total_correct / max(total_count, 1), num_latents=num_latents,
        block_size=block_size, context=context, align=align, buckets=buckets,
        token_unit=getattr(tokenizer, "token_unit", "token"),
        modality=getattr(tokenizer, "modality", None),
        modality_metrics=document_scores.result() if document_scores is not None else {},
    )


def count_targets(source) -> int:
    """Targets `evaluate_source` will score: every token of every document."""
    return sum(len(source[i]["tokens"]) for i in range(len(source)))
