"""Perceiver AR (Hawthorne, Jaegle et al., ICML 2022) in Flax NNX.

Axis legend: B batch, T input positions, N latents, D channels, H heads, K channels per head,
F MLP hidden channels, V vocabulary.

The input is T tokens, left-padded with PAD_ID (0), so the last N positions are always the
latents: latent n sits on input position T - N + n and predicts the token after it. One
cross-attention maps the N latents onto all T inputs (each latent sees inputs up to and
including its own position, at most `max_context` of them), then `num_layers` causal
self-attention blocks run over the N latents only. The cost is O(T*N) + O(L*N^2) per forward
instead of O(L*T^2) for a decoder-only Transformer.

Choices where the original code and its Flaxformer port differ:
- Positions are rotate-half rotary embeddings (base `rotary_base`) on the first
  `rotary_fraction` of each head's channels, in the cross-attention and every self-attention.
  Flaxformer's choice; the original used wavelengths tied to the context length.
- A latent's initial state is its token's embedding (Flaxformer); the query projection of the
  cross-attention provides the learned projection the original applied before it.
- MLPs use squared ReLU by default (original) with 4x hidden width; pre-norm LayerNorms; the
  cross-attention normalises queries and keys/values with separate LayerNorms (original).
- The output head is untied and zero-initialised, so training starts from uniform predictions.
- With `position_axes` set (images: rows, columns, channels), learned absolute embeddings of
  each axis are added to the token embeddings, on top of the rotary positions. They need each
  input's index in its document (`positions`), which the training batches, the evaluation
  windows and the sampler pass.
- Cross-attend dropout keeps round((1 - rate) * (T - N)) context positions per example, drawn
  without replacement, and drops the rest before they are embedded, so training skips their
  projections and attention. The original masks Bernoulli draws instead (and can subsample a
  fixed number of inputs with `train_input_positions`); either way each position is kept with
  probability 1 - rate.

The number of latents is not a parameter: pass `num_latents` at call time to trade compute for
quality at evaluation or sampling time.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from pact.attention import attention, resolve_kernel
from pact.config import ModelConfig
from pact.encodings.base import axis_indices
from pact.precision import dot_general

PAD_ID = 0
EOS_ID = 1


# Rotary positions.


def rotary_channels(head_channels: int, fraction: float) -> int:
    """Channels per head that carry rotary positions: an even number."""
    return int(head_channels * fraction) // 2 * 2


def apply_rotary(x: jax.Array, positions: jax.Array, rotary_dim: int, base: float) -> jax.Array:
    """Rotate the first `rotary_dim` channels of x [B, T, H, K] by positions [T] or [B, T] (rotate-half)."""
    if rotary_dim == 0:
        return x
    half = rotary_dim // 2
    frequencies = base ** (-jnp.arange(half, dtype=jnp.float32) / half)  # [K_r / 2]
    angles = positions.astype(jnp.float32)[..., None] * frequencies  # [(B,) T, K_r / 2]
    sin = jnp.sin(angles)[..., None, :]  # [(B,) T, 1, K_r / 2]
    cos = jnp.cos(angles)[..., None, :]
    rotated = x[..., :rotary_dim].astype(jnp.float32)
    first, second = rotated[..., :half], rotated[..., half:]
    rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
    return jnp.concatenate([rotated.astype(x.dtype), x[..., rotary_dim:]], axis=-1)


def _dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout; identity when `key` is None (evaluation) or the rate is 0."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def _split(key: jax.Array | None, count: int) -> list[jax.Array | None]:
    return [None] * count if key is None else list(jax.random.split(key, count))


# Layers.


class Attention(nnx.Module):
    """Multi-head attention with rotary positions, split into steps a cache can reuse.

    `queries` and `keys_values` return projections *before* rotary, so a cache can keep keys
    and values and rotate them with whatever positions the current window gives them.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        channels, heads = config.num_channels, config.num_heads
        dtype = jnp.dtype(config.compute_dtype)
        linear = dict(use_bias=False, dtype=dtype, preferred_element_type=jnp.float32,
                      dot_general=dot_general, rngs=rngs)
        self.query = nnx.Linear(channels, channels, **linear)
        self.key = nnx.Linear(channels, channels, **linear)
        self.value = nnx.Linear(channels, channels, **linear)
        self.output = nnx.Linear(channels, channels, **linear)
        self.num_heads = heads
        self.compute_dtype = dtype
        self.rotary_dim = rotary_channels(config.head_channels, config.rotary_fraction)
        self.rotary_base = config.rotary_base
        self.kernel = config.attention
        self.chunk_size = config.attention_chunk_size

    def _heads(self, x: jax.Array) -> jax.Array:  # [B, T, D] -> [B, T, H, K]
        return x.reshape(*x.shape[:-1], self.num_heads, -1).astype(self.compute_dtype)

    def queries(self, x: jax.Array) -> jax.Array:
        return self._heads(self.query(x))

    def keys_values(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Keys and values [B, T, H, K] of x [B, T, D], before rotary.

        One product with the two kernels side by side [D, 2D] reads x once instead of twice.
        In the cross-attention x is the embedded inputs, the largest activation of the model.
        """
        kernel = jnp.concatenate([self.key.kernel[...], self.value.kernel[...]], axis=1)
        keys_values = dot_general(
            x.astype(self.compute_dtype), kernel.astype(self.compute_dtype),
            (((x.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.float32,
        )  # [B, T, 2D] float32
        keys, values = jnp.split(keys_values, 2, axis=-1)
        return self._heads(keys), self._heads(values)

    def attend(self, q, k, v, q_positions, k_positions, k_valid, *, window=None) -> jax.Array:
        """Rotate, attend and project: q [B, Q, H, K], k and v [B, T, H, K] -> [B, Q, D] float32."""
        q = apply_rotary(q, q_positions, self.rotary_dim, self.rotary_base)
        k = apply_rotary(k, k_positions, self.rotary_dim, self.rotary_base)
        kernel = resolve_kernel(self.kernel, q.shape[1], k.shape[1], self.chunk_size)
        out = attention(
            q, k, v, q_positions, k_positions, k_valid,
            window=window, kernel=kernel, chunk_size=self.chunk_size,
        )  # [B, Q, H, K] float32
        return self.output(out.reshape(*out.shape[:2], -1).astype(self.compute_dtype))


class MLP(nnx.Module):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        channels = config.num_channels
        hidden = channels * config.mlp_ratio
        dtype = jnp.dtype(config.compute_dtype)
        linear = dict(dtype=dtype, preferred_element_type=jnp.float32, dot_general=dot_general, rngs=rngs)
        self.up = nnx.Linear(channels, hidden, **linear)
        self.down = nnx.Linear(hidden, channels, **linear)
        self.activation = config.activation
        self.compute_dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:  # [B, N, D] -> [B, N, D] float32
        hidden = self.up(x)  # [B, N, F] float32
        if self.activation == "squared_relu":
            hidden = jnp.square(jax.nn.relu(hidden))
        else:
            hidden = jax.nn.gelu(hidden)
        return self.down(hidden.astype(self.compute_dtype))


class CrossAttentionBlock(nnx.Module):
    """Latents attend to the inputs, then an MLP; pre-norm residuals on the latents."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        channels = config.num_channels
        self.query_norm = nnx.LayerNorm(channels, rngs=rngs)
        self.input_norm = nnx.LayerNorm(channels, rngs=rngs)
        self.attention = Attention(config, rngs=rngs)
        self.mlp_norm = nnx.LayerNorm(channels, rngs=rngs)
        self.mlp = MLP(config, rngs=rngs)
        self.dropout = config.dropout
        self.window = config.max_context

    def input_keys_values(self, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Keys and values [B, T, H, K] of embedded inputs [B, T, D], before rotary."""
        return self.attention.keys_values(self.input_norm(inputs))

    def __call__(self, latents, latent_positions, keys, values, input_positions, input_valid,
                 *, dropout_key=None) -> jax.Array:
        """latents [B, N, D], keys and values [B, T, H, K] -> latents [B, N, D]."""
        first_key, second_key = _split(dropout_key, 2)
        queries = self.attention.queries(self.query_norm(latents))
        attended = self.attention.attend(
            queries, keys, values, latent_positions, input_positions, input_valid, window=self.window
        )
        latents = latents + _dropout(attended, self.dropout, first_key)
        return latents + _dropout(self.mlp(self.mlp_norm(latents)), self.dropout, second_key)


class SelfAttentionBlock(nnx.Module):
    """Causal self-attention over the latents, then an MLP; pre-norm residuals."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        channels = config.num_channels
        self.attention_norm = nnx.LayerNorm(channels, rngs=rngs)
        self.attention = Attention(config, rngs=rngs)
        self.mlp_norm = nnx.LayerNorm(channels, rngs=rngs)
        self.mlp = MLP(config, rngs=rngs)
        self.dropout = config.dropout

    def __call__(self, latents, positions, valid, *, dropout_key=None):
        """latents [B, N, D] at positions [N] with validity [B, N] -> (latents, (keys, values)).

        The keys and values [B, N, H, K] (before rotary) are what a decoding cache keeps.
        """
        normed = self.attention_norm(latents)
        keys, values = self.attention.keys_values(normed)
        latents = self.attend(latents, normed, keys, values, positions, positions, valid,
                              dropout_key=dropout_key)
        return latents, (keys, values)

    def attend(self, latents, normed, keys, values, q_positions, k_positions, k_valid,
               *, dropout_key=None) -> jax.Array:
        """Residual attention of `latents` (normed: `normed`) onto given keys, then the MLP."""
        first_key, second_key = _split(dropout_key, 2)
        queries = self.attention.queries(normed)
        attended = self.attention.attend(queries, keys, values, q_positions, k_positions, k_valid)
        latents = latents + _dropout(attended, self.dropout, first_key)
        return latents + _dropout(self.mlp(self.mlp_norm(latents)), self.dropout, second_key)


# The model.


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class ForwardCache:
    """Keys and values of a full forward pass, as the sampler's cache starts from them.

    input_keys, input_values    [B, T, H, K]     cross-attention keys of every input, before rotary
    latent_keys, latent_values  [L, B, N, H, K]  each self-attention layer's latent keys

    With a dropout key (training), the input keys cover only the inputs kept by cross-attend
    dropout, in a random order; the sampler runs without one.
    """

    input_keys: jax.Array
    input_values: jax.Array
    latent_keys: jax.Array
    latent_values: jax.Array


def token_embedding(config: ModelConfig, *, rngs: nnx.Rngs) -> nnx.Embed:
    """Token embedding table [V, D]."""
    if config.vocab_size is None:
        raise ValueError("ModelConfig.vocab_size must be set before building the model")
    return nnx.Embed(
        config.vocab_size, config.num_channels, embedding_init=nnx.initializers.normal(0.02), rngs=rngs
    )


class AxisEmbedding(nnx.Module):
    """Learned absolute position embeddings, one table [size, D] per axis of a grid.

    A document's ids fill the grid `axes` in row-major order (`Tokenizer.position_axes`).
    The input at document index p (the leading EOS is p = 0) is token index p - 1, and gets
    the sum of its row, column and channel embeddings. EOS, padding and inputs outside the
    grid get none. The tables start at zero, so a new model starts out computing what the
    same model without them computes.
    """

    def __init__(self, axes: tuple[int, ...], channels: int, *, rngs: nnx.Rngs):
        self.axes = tuple(axes)
        self.tables = nnx.List([
            nnx.Embed(size, channels, embedding_init=nnx.initializers.zeros_init(), rngs=rngs)
            for size in self.axes
        ])

    def __call__(self, tokens: jax.Array, positions: jax.Array) -> jax.Array:
        """Embeddings [B, T, D] float32 of tokens [B, T] at document indices `positions` [B, T]."""
        token_index = positions - 1
        num_cells = math.prod(self.axes)
        inside = (token_index >= 0) & (token_index < num_cells) & (tokens != PAD_ID) & (tokens != EOS_ID)
        # Floor division and modulo keep every axis index in range, also for masked inputs.
        indices = axis_indices(token_index, self.axes)
        embedded = sum(table(index) for table, index in zip(self.tables, indices))  # [B, T, D]
        return jnp.where(inside[..., None], embedded, 0.0)


def axis_embedding(config: ModelConfig, *, rngs: nnx.Rngs) -> AxisEmbedding | None:
    """Axis embeddings of `config.position_axes`, or None when it is unset."""
    if config.position_axes is None:
        return None
    return AxisEmbedding(config.position_axes, config.num_channels, rngs=rngs)


def sinusoidal_positions(positions: jax.Array, channels: int, max_wavelength: float) -> jax.Array:
    """Fixed sinusoids [..., D] of document indices `positions` [...], with wavelengths up to `max_wavelength`.

    Half the channels are sines and half cosines of positions * 2 pi / wavelength, with the
    wavelengths spaced geometrically from 2 pi to `max_wavelength` (Vaswani et al., 2017).
    """
    half = channels // 2
    frequencies = 1.0 / max_wavelength ** (jnp.arange(half, dtype=jnp.float32) / half)  # [D / 2], radians per index
    angles = positions.astype(jnp.float32)[..., None] * frequencies  # [..., D / 2]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


# Amplitude of the absolute sinusoids: the standard deviation of the token embeddings at
# initialisation, so that neither drowns the other.
ABSOLUTE_POSITION_SCALE = 0.02


def embed_inputs(model: nnx.Module, tokens: jax.Array, positions: jax.Array | None) -> jax.Array:
    """Embed tokens [B, T] with `model.embed`, plus the absolute positions that the config enables.

    `positions` [B, T] are the document indices of the tokens. They add learned axis
    embeddings (`model.axis_embedding`) and fixed sinusoids (`model.absolute_positions`).
    A model with neither ignores them; one with either raises ValueError when they are missing.
    """
    embedded = model.embed(tokens)  # [B, T, D]
    sinusoids = model.config.absolute_positions
    if model.axis_embedding is None and not sinusoids:
        return embedded
    if positions is None:
        raise ValueError(
            "this model has absolute positions (model.position_axes or model.absolute_positions "
            "is set): pass `positions`, the index in its document of each input, where the "
            "leading EOS is 0"
        )
    positions = jnp.broadcast_to(positions, tokens.shape)
    if model.axis_embedding is not None:
        embedded = embedded + model.axis_embedding(tokens, positions)
    if sinusoids:
        waves = sinusoidal_positions(positions, embedded.shape[-1], 4.0 * model.config.max_context)
        embedded = embedded + jnp.where((tokens != PAD_ID)[..., None], ABSOLUTE_POSITION_SCALE * waves, 0.0)
    return embedded


def output_head(config: ModelConfig, *, rngs: nnx.Rngs) -> nnx.Linear:
    """Untied, zero-initialised output projection [D, V]: training starts from uniform predictions."""
    return nnx.Linear(
        config.num_channels, config.vocab_size, kernel_init=nnx.initializers.zeros_init(),
        dtype=jnp.dtype(config.compute_dtype), preferred_element_type=jnp.float32,
        dot_general=dot_general, rngs=rngs,
    )


def run_blocks(blocks, x, positions, valid, *, remat: bool, dropout_key=None):
    """Run causal self-attention blocks over x [B, T, D] at positions [T] with validity [B, T].

    Returns x after the last block and each block's keys and values [B, T, H, K] (before
    rotary), stacked to [L, B, T, H, K]. With `remat`, each block's activations are recomputed
    in the backward pass instead of stored.
    """
    all_keys, all_values = [], []
    for block, key in zip(blocks, _split(dropout_key, len(blocks))):
        if remat:
            run_block = nnx.remat(lambda b, x, k: b(x, positions, valid, dropout_key=k))
            x, (keys, values) = run_block(block, x, key)
        else:
            x, (keys, values) = block(x, positions, valid, dropout_key=key)
        all_keys.append(keys)
        all_values.append(values)
    return x, jnp.stack(all_keys), jnp.stack(all_values)


class PerceiverAR(nnx.Module):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embed = token_embedding(config, rngs=rngs)
        self.cross_attention = CrossAttentionBlock(config, rngs=rngs)
        self.blocks = nnx.List([SelfAttentionBlock(config, rngs=rngs) for _ in range(config.num_layers)])
        self.final_norm = nnx.LayerNorm(config.num_channels, rngs=rngs)
        self.head = output_head(config, rngs=rngs)
        # Last, so that the other parameters are drawn as in a model without axis embeddings.
        self.axis_embedding = axis_embedding(config, rngs=rngs)

    def __call__(self, inputs: jax.Array, *, positions: jax.Array | None = None,
                 num_latents: int | None = None, dropout_key: jax.Array | None = None,
                 latent_mask: jax.Array | None = None) -> jax.Array:
        """Next-token logits [B, N, V] float32 for inputs [B, T] int32.

        Latent n predicts the token after input position T - N + n. T may exceed `max_context`
        (the sampler passes up to max_context + N - 1 tokens); each latent still sees at most
        `max_context` inputs. `positions` [B, T] int32 is each input's index in its document
        (the leading EOS is 0); a model with axis embeddings requires it, others ignore it.
        `dropout_key` turns on dropout and cross-attend dropout (training). `latent_mask` [N]
        bool marks latents to treat as padding where False.
        """
        return self.forward(inputs, positions=positions, num_latents=num_latents,
                            dropout_key=dropout_key, latent_mask=latent_mask)[0]

    def forward(self, inputs: jax.Array, *, positions: jax.Array | None = None,
                num_latents: int | None = None, dropout_key: jax.Array | None = None,
                latent_mask: jax.Array | None = None) -> tuple[jax.Array, ForwardCache]:
        """Logits [B, N, V] and the keys and values a decoding cache starts from."""
        config = self.config
        batch, length = inputs.shape
        num_latents = num_latents or config.num_latents
        if num_latents > length:
            raise ValueError(f"num_latents={num_latents} exceeds the input length {length}")
        mask_key, cross_key, block_key = _split(dropout_key, 3)

        # 1. Cross-attend dropout (training only): keep a random subset of the context
        #    positions as keys, drawn per example and shared by all latents and heads. The
        #    count is fixed, round((1 - rate) * context), so shapes stay static and the dropped
        #    inputs are never embedded or projected; each position is still kept with
        #    probability 1 - rate. The latents' own positions are always kept, so every latent
        #    keeps the keys from the first latent up to itself.
        #    Rotary positions are window columns, and `positions` are document indices.
        columns = jnp.arange(length)  # [T]
        context = length - num_latents
        key_positions, key_tokens = columns, inputs  # [T], [B, T]
        key_document_positions = positions  # [B, T] or None
        if mask_key is not None and config.cross_attend_dropout > 0.0:
            num_kept = context - round(context * config.cross_attend_dropout)
            shuffled = jnp.argsort(jax.random.uniform(mask_key, (batch, context)), axis=1)
            latent_columns = jnp.broadcast_to(columns[context:], (batch, num_latents))
            key_positions = jnp.concatenate([shuffled[:, :num_kept], latent_columns], axis=1)  # [B, T']
            key_tokens = jnp.take_along_axis(inputs, key_positions, axis=1)  # [B, T']
            if positions is not None:
                positions = jnp.broadcast_to(positions, inputs.shape)
                key_document_positions = jnp.take_along_axis(positions, key_positions, axis=1)

        # 2. Embed the key inputs; the last N embeddings start the latents.
        embedded = embed_inputs(self, key_tokens, key_document_positions)  # [B, T', D]
        key_valid = key_tokens != PAD_ID  # [B, T']
        latents = embedded[:, -num_latents:]  # [B, N, D]
        latent_positions = columns[context:]  # [N]
        latent_valid = inputs[:, context:] != PAD_ID  # [B, N]
        if latent_mask is not None:
            latent_valid = latent_valid & latent_mask[None, :]

        # 3. One cross-attention from the latents onto the key inputs.
        input_keys, input_values = self.cross_attention.input_keys_values(embedded)
        latents = self.cross_attention(
            latents, latent_positions, input_keys, input_values, key_positions, key_valid,
            dropout_key=cross_key,
        )

        # 4. Causal self-attention over the latents only.
        latents, latent_keys, latent_values = run_blocks(
            self.blocks, latents, latent_positions, latent_valid, remat=config.remat,
            dropout_key=block_key,
        )

        # 5. Untied head.
        logits = self.head(self.final_norm(latents))  # [B, N, V] float32
        cache = ForwardCache(input_keys, input_values, latent_keys, latent_values)
        return logits, cache


def count_parameters(model: nnx.Module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
