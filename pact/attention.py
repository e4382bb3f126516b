"""Masked multi-head attention with interchangeable kernels.

Axis legend: B batch, Q query positions, T key positions, H heads, K channels per head,
C keys per chunk.

Every attention in Perceiver AR uses one mask rule, given by positions rather than by a dense
mask array: query q may attend to key t iff

    k_position[t] <= q_position[q]  and  k_valid[b, t]      (causal, skips padding)
        and q_position[q] - k_position[t] < window           (when a window is set)
    or k_position[t] == q_position[q]                        (its own position, always)

The window limits each query to the `window` most recent keys. The cross-attention uses the
context length M as its window: in training the input is M tokens long, so the window never
binds, but at sampling time the input can be longer than M, and each latent then still sees at
most the M inputs up to its own position, exactly as in training.

The second clause keeps every row non-empty, so a padding latent or a latent whose every
earlier key was dropped still has a well-defined softmax over one key (its own), never a
uniform one over future keys. For the cross-attention from 3 latents onto 6 inputs, with
input 1 padding, the rows are (1 = allowed):

    keys:        0 1 2 3 4 5
    latent @3:   1 0 1 1 0 0
    latent @4:   1 0 1 1 1 0
    latent @5:   1 0 1 1 1 1

Kernels:
    xla      dense logits [B, H, Q, T]; fastest for short contexts.
    chunked  online softmax over key chunks with a custom VJP (FlashAttention-style); memory
             O(B*H*Q*C) instead of O(B*H*Q*T), for very long contexts.
    cudnn    `jax.nn.dot_product_attention` with cuDNN's fused kernel (GPU only).
All take float32 or bfloat16 inputs and accumulate, mask and softmax in float32.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# A large finite negative instead of -inf, so that masked logits never produce NaN.
_MASKED = -1e30


def attention_mask(
    q_positions: jax.Array, k_positions: jax.Array, k_valid: jax.Array, window: int | None = None
) -> jax.Array:
    """Boolean mask [B, 1, Q, T] from positions [Q], [T] and key validity [B, T]."""
    distance = q_positions[:, None] - k_positions[None, :]  # [Q, T]
    allowed = distance >= 0
    if window is not None:
        allowed &= distance < window
    own = distance == 0
    return (allowed[None] & k_valid[:, None, :] | own[None])[:, None]


def _scale(q: jax.Array) -> float:
    return q.shape[-1] ** -0.5


def xla_attention(q, k, v, q_positions, k_positions, k_valid, window=None) -> jax.Array:
    """Dense attention: q [B, Q, H, K], k and v [B, T, H, K] -> [B, Q, H, K] float32."""
    logits = jnp.einsum("bqhk,bthk->bhqt", q, k, preferred_element_type=jnp.float32)
    logits = logits * _scale(q)
    mask = attention_mask(q_positions, k_positions, k_valid, window)
    logits = jnp.where(mask, logits, _MASKED)
    weights = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("bhqt,bthk->bqhk", weights.astype(v.dtype), v, preferred_element_type=jnp.float32)


def cudnn_attention(
    q, k, v, q_positions, k_positions, k_valid, window=None, implementation="cudnn"
) -> jax.Array:
    """`jax.nn.dot_product_attention` with the same mask; cuDNN's fused kernel on GPUs.

    `implementation=None` lets JAX pick (cuDNN where it applies, XLA otherwise); tests use
    "xla" on the CPU to check that the mask and scaling agree with `xla_attention`.
    """
    mask = attention_mask(q_positions, k_positions, k_valid, window)
    out = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=implementation)
    return out.astype(jnp.float32)


# Chunked attention: forward and backward both stream over key chunks of C positions.


def _chunk_keys(k, v, k_positions, k_valid, chunk_size):
    """Pad T to a multiple of C and move chunks to the front: k, v [N, B, C, H, K]."""
    batch, length, heads, channels = k.shape
    num_chunks = -(-length // chunk_size)
    pad = num_chunks * chunk_size - length
    if pad:
        # Padded keys are invalid and sit at position -1, which equals no query position.
        k = jnp.pad(k, ((0, 0), (0, pad), (0, 0), (0, 0)))
        v = jnp.pad(v, ((0, 0), (0, pad), (0, 0), (0, 0)))
        k_positions = jnp.pad(k_positions, (0, pad), constant_values=-1)
        k_valid = jnp.pad(k_valid, ((0, 0), (0, pad)))
    k = k.reshape(batch, num_chunks, chunk_size, heads, channels).swapaxes(0, 1)
    v = v.reshape(batch, num_chunks, chunk_size, heads, channels).swapaxes(0, 1)
    k_positions = k_positions.reshape(num_chunks, chunk_size)
    k_valid = k_valid.reshape(batch, num_chunks, chunk_size).swapaxes(0, 1)
    return k, v, k_positions, k_valid, pad


def _chunk_logits(q, k_chunk, q_positions, k_chunk_positions, k_chunk_valid, window):
    """Scaled logits [B, H, Q, C] in float32 and their mask [B, 1, Q, C]."""
    logits = jnp.einsum("bqhk,bchk->bhqc", q, k_chunk, preferred_element_type=jnp.float32)
    mask = attention_mask(q_positions, k_chunk_positions, k_chunk_valid, window)
    return logits * _scale(q), mask


def _chunked_forward(q, k, v, q_positions, k_positions, k_valid, window, chunk_size):
    batch, queries, heads, channels = q.shape
    chunks = _chunk_keys(k, v, k_positions, k_valid, chunk_size)[:4]

    def step(carry, chunk):
        running_max, normaliser, accumulator = carry  # [B, H, Q], [B, H, Q], [B, H, Q, K]
        k_chunk, v_chunk, chunk_positions, chunk_valid = chunk
        logits, mask = _chunk_logits(q, k_chunk, q_positions, chunk_positions, chunk_valid, window)
        new_max = jnp.maximum(running_max, jnp.max(jnp.where(mask, logits, _MASKED), axis=-1))
        weights = jnp.where(mask, jnp.exp(logits - new_max[..., None]), 0.0)  # [B, H, Q, C]
        correction = jnp.exp(running_max - new_max)
        normaliser = normaliser * correction + weights.sum(axis=-1)
        accumulator = accumulator * correction[..., None] + jnp.einsum(
            "bhqc,bchk->bhqk", weights.astype(v.dtype), v_chunk, preferred_element_type=jnp.float32
        )
        return (new_max, normaliser, accumulator), None

    init = (
        jnp.full((batch, heads, queries), _MASKED, jnp.float32),
        jnp.zeros((batch, heads, queries), jnp.float32),
        jnp.zeros((batch, heads, queries, channels), jnp.float32),
    )
    (running_max, normaliser, accumulator), _ = jax.lax.scan(step, init, chunks)
    # Every row has at least its own key, so the normaliser is positive.
    out = accumulator / normaliser[..., None]  # [B, H, Q, K]
    log_normaliser = running_max + jnp.log(normaliser)  # [B, H, Q]
    return out.transpose(0, 2, 1, 3), log_normaliser


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def chunked_attention(q, k, v, q_positions, k_positions, k_valid, window=None, chunk_size=1024):
    """Memory-efficient attention: same result as `xla_attention`, O(C) memory in T."""
    return _chunked_forward(q, k, v, q_positions, k_positions, k_valid, window, chunk_size)[0]


def _chunked_fwd(q, k, v, q_positions, k_positions, k_valid, window, chunk_size):
    out, log_normaliser = _chunked_forward(q, k, v, q_positions, k_positions, k_valid, window, chunk_size)
    return out, (q, k, v, q_positions, k_positions, k_valid, out, log_normaliser)


def _chunked_bwd(window, chunk_size, residuals, d_out):
    q, k, v, q_positions, k_positions, k_valid, out, log_normaliser = residuals
    length = k.shape[1]
    k_chunks, v_chunks, chunk_positions, chunk_valid, pad = _chunk_keys(
        k, v, k_positions, k_valid, chunk_size
    )
    d_out = d_out.astype(jnp.float32)  # [B, Q, H, K]
    # delta = rowsum(dO * O), the softmax Jacobian term shared by all chunks.
    delta = jnp.einsum("bqhk,bqhk->bhq", d_out, out)
    d_out_compute = d_out.astype(v.dtype)

    def step(d_q, chunk):
        k_chunk, v_chunk, positions, valid = chunk
        logits, mask = _chunk_logits(q, k_chunk, q_positions, positions, valid, window)
        weights = jnp.where(mask, jnp.exp(logits - log_normaliser[..., None]), 0.0)  # [B, H, Q, C]
        d_v = jnp.einsum("bhqc,bqhk->bchk", weights.astype(v.dtype), d_out_compute,
                         preferred_element_type=jnp.float32)
        d_weights = jnp.einsum("bqhk,bchk->bhqc", d_out_compute, v_chunk, preferred_element_type=jnp.float32)
        d_logits = weights * (d_weights - delta[..., None]) * _scale(q)
        d_logits = d_logits.astype(q.dtype)
        d_q = d_q + jnp.einsum("bhqc,bchk->bqhk", d_logits, k_chunk, preferred_element_type=jnp.float32)
        d_k = jnp.einsum("bhqc,bqhk->bchk", d_logits, q, preferred_element_type=jnp.float32)
        return d_q, (d_k, d_v)

    d_q, (d_k, d_v) = jax.lax.scan(
        step, jnp.zeros(q.shape, jnp.float32), (k_chunks, v_chunks, chunk_positions, chunk_valid)
    )

    def unchunk(x):  # [N, B, C, H, K] -> [B, T, H, K]
        x = x.swapaxes(0, 1)
        x = x.reshape(x.shape[0], -1, *x.shape[3:])
        return x[:, :length]

    return (
        d_q.astype(q.dtype),
        unchunk(d_k).astype(k.dtype),
        unchunk(d_v).astype(v.dtype),
        None,
        None,
        None,
    )


chunked_attention.defvjp(_chunked_fwd, _chunked_bwd)


def attention(
    q, k, v, q_positions, k_positions, k_valid, *, window=None, kernel="xla", chunk_size=1024
):
    """Dispatch to a kernel by name; see the module docstring for the mask rule."""
    if kernel == "xla":
        return xla_attention(q, k, v, q_positions, k_positions, k_valid, window)
    if kernel == "chunked":
        return chunked_attention(q, k, v, q_positions, k_positions, k_valid, window, chunk_size)
    if kernel == "cudnn":
        return cudnn_attention(q, k, v, q_positions, k_positions, k_valid, window)
    raise ValueError(f"unknown attention kernel {kernel!r}")


def resolve_kernel(name: str, num_keys: int, chunk_size: int) -> str:
    """Pick a concrete kernel for `auto`: cuDNN on GPUs, chunked when the keys span several chunks."""
    if name != "auto":
        return name
    if jax.default_backend() == "gpu":
        return "cudnn"
    return "chunked" if num_keys > 2 * chunk_size else "xla"
