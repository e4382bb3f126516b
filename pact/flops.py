"""Analytic matmul FLOPs of one training step, Perceiver AR and the decoder-only baseline.

Symbols: B batch, T input positions (the context M in training), N latents, D channels,
F = mlp_ratio * D MLP hidden channels, L self-attention layers, V vocabulary, and T' the keys
of Perceiver AR's cross-attention: T without cross-attend dropout, N + (T - N) - round((T - N)
* rate) with it (the dropped inputs are never projected or attended).

A product of [m, k] by [k, n] costs 2*m*k*n FLOPs. The forward pass of Perceiver AR costs

    cross-attention  4*B*T'*D^2 (keys and values of the kept inputs)
                   + 4*B*N*D^2 (query and output) + 4*B*N*D*F (MLP)
                   + 4*B*N*T'*D (logits QK^T and weighted values PV, all heads)
    each layer       8*B*N*D^2 (Q, K, V, output) + 4*B*N*D*F (MLP) + 4*B*N^2*D (attention)
    head             2*B*N*D*V

and the decoder-only Transformer costs, with every position a query and a target,

    each layer       8*B*T*D^2 + 4*B*T*D*F + 4*B*T^2*D
    head             2*B*T*D*V

The backward pass computes two products per forward product (the gradients of both operands:
every operand is a parameter or depends on one), so a step costs 3x the forward pass. The
attention terms count every query-key pair, masked pairs included, because the kernels compute
them. The chunked kernel also recomputes QK^T in its backward pass; that is counted apart in
`attention_recompute`, outside `model`, as usual for model FLOPs utilisation.

Not counted: embedding lookups (gathers), normalisations, softmax, activations, dropout and
the optimizer update, which are elementwise and cost O(B*T*D) or O(B*H*N*T) each.
"""

from __future__ import annotations

import dataclasses

from pact.config import ModelConfig

# Forward + backward products per forward product.
_TRAINING_FACTOR = 3


@dataclasses.dataclass(frozen=True)
class StepFlops:
    """Matmul FLOPs of one training step (forward and backward), by part."""

    projections: float
    """Every linear layer except the head: Q, K, V, output and MLP products."""
    attention: float
    """Logits QK^T and weighted values PV of every attention."""
    head: float
    """The output projection onto the vocabulary."""
    attention_recompute: float
    """QK^T recomputed in the chunked kernel's backward pass (0 for the dense kernel)."""

    @property
    def model(self) -> float:
        """FLOPs the model needs: the numerator of model FLOPs utilisation."""
        return self.projections + self.attention + self.head

    @property
    def executed(self) -> float:
        """FLOPs the compiled step runs, recomputation included."""
        return self.model + self.attention_recompute


def cross_attention_keys(context: int, num_latents: int, cross_attend_dropout: float) -> int:
    """Keys T' of Perceiver AR's cross-attention in training; `PerceiverAR.forward` keeps as many."""
    dropped_context = context - num_latents
    return num_latents + dropped_context - round(dropped_context * cross_attend_dropout)


def perceiver_ar_step_flops(config: ModelConfig, batch: int, *, context: int | None = None,
                            num_latents: int | None = None, chunked: bool = True) -> StepFlops:
    """FLOPs of one Perceiver AR training step on inputs [batch, context] with dropout on.

    `context` and `num_latents` default to the config's `max_context` and `num_latents`.
    Set `chunked` when the attention kernel recomputes QK^T in its backward pass.
    """
    context = context or config.max_context
    latents = num_latents or config.num_latents
    channels, hidden = config.num_channels, config.num_channels * config.mlp_ratio
    keys = cross_attention_keys(context, latents, config.cross_attend_dropout)
    rows = batch * latents  # latent positions in the batch

    # Forward products.
    projections = 4 * batch * keys * channels**2 + 4 * rows * channels**2 + 4 * rows * channels * hidden
    projections += config.num_layers * (8 * rows * channels**2 + 4 * rows * channels * hidden)
    attention = 4 * rows * keys * channels + config.num_layers * 4 * rows * latents * channels
    head = 2 * rows * channels * config.vocab_size
    recompute = attention / 2 if chunked else 0

    return StepFlops(
        projections=_TRAINING_FACTOR * projections,
        attention=_TRAINING_FACTOR * attention,
        head=_TRAINING_FACTOR * head,
        attention_recompute=recompute,
    )


def decoder_only_step_flops(config: ModelConfig, batch: int, *, context: int | None = None,
                            chunked: bool = True) -> StepFlops:
    """FLOPs of one training step of `pact.baseline.DecoderOnly` on inputs [batch, context]."""
    context = context or config.max_context
    channels, hidden = config.num_channels, config.num_channels * config.mlp_ratio
    rows = batch * context

    # Forward products.
    projections = config.num_layers * (8 * rows * channels**2 + 4 * rows * channels * hidden)
    attention = config.num_layers * 4 * rows * context * channels
    head = 2 * rows * channels * config.vocab_size
    recompute = attention / 2 if chunked else 0

    return StepFlops(
        projections=_TRAINING_FACTOR * projections,
        attention=_TRAINING_FACTOR * attention,
        head=_TRAINING_FACTOR * head,
        attention_recompute=recompute,
    )
