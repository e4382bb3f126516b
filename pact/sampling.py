"""Sampling strategies: next-token logits [B, V] and a PRNG key -> token ids [B].

Filters apply in this order: temperature, top-k, min-p, top-p; then one categorical draw per
row. Temperature 0 means greedy decoding (argmax). The padding id is never sampled, and the
end-of-sequence id only when `allow_eos` is set.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from pact.errors import ConfigError

PAD_ID = 0
EOS_ID = 1
_MASKED = -1e30


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 1.0
    """Divides the logits; below 1 sharpens, above 1 flattens; 0 is greedy (argmax)."""
    top_k: int = 0
    """Keep only the k most likely tokens; 0 keeps all."""
    top_p: float = 1.0
    """Nucleus: keep the smallest set of tokens whose probability sums to at least p."""
    min_p: float = 0.0
    """Drop tokens less likely than min_p times the most likely token's probability."""
    allow_eos: bool = True
    """Whether the model may end the sequence; off, generation runs to the requested length."""

    def __post_init__(self):
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ConfigError(
                f"temperature={self.temperature} is invalid: use a finite value above 0, or 0 for greedy decoding"
            )
        if self.top_k < 0:
            raise ConfigError(f"top-k={self.top_k} is invalid: use 0 (off) or a positive count of tokens")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top-p={self.top_p} is invalid: it must be in (0, 1]; 1 turns it off")
        if not 0.0 <= self.min_p < 1.0:
            raise ConfigError(f"min-p={self.min_p} is invalid: it must be in [0, 1); 0 turns it off")


def _mask_reserved(logits: jax.Array, config: SamplingConfig) -> jax.Array:
    logits = logits.astype(jnp.float32).at[:, PAD_ID].set(_MASKED)
    if not config.allow_eos:
        logits = logits.at[:, EOS_ID].set(_MASKED)
    return logits


def filter_logits(logits: jax.Array, config: SamplingConfig) -> jax.Array:
    """Temperature-scaled logits [B, V] float32 with filtered-out tokens set to a large negative."""
    logits = _mask_reserved(logits, config) / config.temperature

    if config.top_k > 0 and config.top_k < logits.shape[-1]:
        kth_largest = jax.lax.top_k(logits, config.top_k)[0][:, -1:]  # [B, 1]
        logits = jnp.where(logits >= kth_largest, logits, _MASKED)

    if config.min_p > 0.0:
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        threshold = jnp.max(log_probs, axis=-1, keepdims=True) + jnp.log(config.min_p)
        logits = jnp.where(log_probs >= threshold, logits, _MASKED)

    if config.top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)  # [B, V] most likely first
        sorted_probs = jax.nn.softmax(jnp.take_along_axis(logits, order, axis=-1), axis=-1)
        # Keep a token if the probability mass before it is below p: the most likely token
        # is always kept, and the set stops at the first token that reaches p.
        mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
        keep_sorted = mass_before < config.top_p
        keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
        logits = jnp.where(keep, logits, _MASKED)

    return logits


def sample_logits(logits: jax.Array, key: jax.Array, config: SamplingConfig) -> jax.Array:
    """Token ids [B] int32 drawn from logits [B, V]."""
    if config.temperature == 0.0:
        return jnp.argmax(_mask_reserved(logits, config), axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, filter_logits(logits, config), axis=-1).astype(jnp.int32)
