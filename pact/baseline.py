"""A decoder-only Transformer built from Perceiver AR's layers, the baseline of the benchmarks.

Axis legend: B batch, T positions, N positions that get logits (T in training), D channels,
V vocabulary.

The model embeds T tokens and runs `num_layers` causal self-attention blocks over all T
positions, then the final LayerNorm and the untied head give next-token logits at every
position. It shares `PerceiverAR`'s token embedding, `SelfAttentionBlock` (pre-norm, rotary,
MLP, dropout), attention kernels, bfloat16 matmuls with float32 accumulation, final norm and
head. A benchmark of the two therefore measures the architecture alone: O(L * T^2) work per
step for the self-attention against Perceiver AR's O(T * N) + O(L * N^2).

`__call__` takes the same arguments as `PerceiverAR.__call__`, so `pact.train.make_train_step`
trains it unchanged when `config.num_latents` equals `config.max_context`: "latents" are then
every position, and the loss covers every target.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from pact.config import ModelConfig
from pact.model import (
    PAD_ID, SelfAttentionBlock, axis_embedding, embed_inputs, output_head, run_blocks, token_embedding,
)


class DecoderOnly(nnx.Module):
    """Causal self-attention over all positions in every layer; Perceiver AR's layers."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embed = token_embedding(config, rngs=rngs)
        self.blocks = nnx.List([SelfAttentionBlock(config, rngs=rngs) for _ in range(config.num_layers)])
        self.final_norm = nnx.LayerNorm(config.num_channels, rngs=rngs)
        self.head = output_head(config, rngs=rngs)
        self.axis_embedding = axis_embedding(config, rngs=rngs)

    def __call__(self, inputs: jax.Array, *, positions: jax.Array | None = None,
                 num_latents: int | None = None, dropout_key: jax.Array | None = None,
                 latent_mask: jax.Array | None = None) -> jax.Array:
        """Next-token logits [B, N, V] float32 of the last N positions of inputs [B, T] int32.

        N is `num_latents`, or T when it is None. Every layer still runs over all T positions.
        `positions` (document indices, for axis embeddings), `dropout_key` (training) and
        `latent_mask` [N] bool (output positions to treat as padding where False) work as in
        `PerceiverAR`.
        """
        length = inputs.shape[1]
        num_outputs = num_latents or length
        if num_outputs > length:
            raise ValueError(f"num_latents={num_outputs} exceeds the input length {length}")

        columns = jnp.arange(length)  # [T]
        valid = inputs != PAD_ID  # [B, T]
        if latent_mask is not None:
            valid = valid.at[:, length - num_outputs:].set(valid[:, length - num_outputs:] & latent_mask[None, :])

        hidden = embed_inputs(self, inputs, positions)  # [B, T, D]
        hidden, _, _ = run_blocks(
            self.blocks, hidden, columns, valid, remat=self.config.remat, dropout_key=dropout_key
        )
        return self.head(self.final_norm(hidden[:, length - num_outputs:]))  # [B, N, V] float32
