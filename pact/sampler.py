"""Autoregressive generation with a key/value cache, and the full-pass reference.

Axis legend: B variations, M context (max_context), N latents (the cache capacity), L layers,
H heads, K channels per head, V vocabulary, W = M + N - 1 tokens kept for full passes.

N defaults to the latents the model was trained with; `Sampler(num_latents=...)` samples with
fewer, which Perceiver AR allows because latents are not parameters. The cache capacity is read
from the decode state's shapes, so every step function works with any N.

The cache keeps, for the B variations generated in lockstep:
- the cross-attention keys and values of the last M inputs (a sliding window), and
- the keys and values of up to N latents in every self-attention layer.

Per new token the sampler embeds it, appends its keys and values to the input window, runs one
new latent through the cross-attention and every layer (appending its keys and values to the
latent caches) and reads the logits: O(M + L*N) work instead of a full forward pass.

When the latent caches are full (N entries) they are not rolled, because a rolled cache would
make predictions depend on latents computed from other windows. Instead one full forward pass
over the current window with N/2 latents refills them. So the prediction after every token
equals a full forward pass over the last M + n - 1 tokens with n latents, where n steps through
N/2, N/2 + 1, ..., N, N/2, ... and each latent sees the M inputs up to its own position. The
uncached mode (`use_cache=False`) computes exactly that full pass at every step, with the same
n, so both modes produce the same generation; a test checks it.

Positions are window-relative: the cache stores keys before rotary and the attention rotates
them by their place in the current window, so positions never leave the trained range however
long the generation runs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pact.errors import ConfigError
from pact.model import PAD_ID, PerceiverAR
from pact.sampling import SamplingConfig, sample_logits

EOS_ID = 1


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DecodeState:
    """Everything the next generation step needs.

    tokens         [B, W]        the last W tokens, left-padded
    input_keys     [B, M, H, K]  cross-attention keys of the last M tokens, before rotary
    input_values   [B, M, H, K]
    latent_keys    [L, B, N, H, K]  slots 0..latent_count-1 hold the cached latents, in order
    latent_values  [L, B, N, H, K]
    latent_valid   [B, N]        slots holding a real (non-padding) latent
    latent_count   []            latents in the cache, the n of the equivalent full pass
    logits         [B, V]        float32 logits for the next token
    """

    tokens: jax.Array
    input_keys: jax.Array
    input_values: jax.Array
    latent_keys: jax.Array
    latent_values: jax.Array
    latent_valid: jax.Array
    latent_count: jax.Array
    logits: jax.Array


def refill_latents(num_latents: int) -> int:
    """Latents of the full pass that refills a full cache of `num_latents` (N/2)."""
    return max(num_latents // 2, 1)


def _append(window: jax.Array, new: jax.Array) -> jax.Array:
    """Shift `window` [B, T, ...] left by one and put `new` [B, 1, ...] at the end."""
    return jnp.concatenate([window[:, 1:], new], axis=1)


def full_pass(model: PerceiverAR, tokens: jax.Array, num_latents: int, capacity: int | None = None) -> DecodeState:
    """Decode state after one full forward pass with `num_latents` latents over `tokens` [B, W].

    `capacity` is the N of the latent caches; the default is the model's trained latents.
    """
    config = model.config
    context = config.max_context
    capacity = capacity or config.num_latents
    width = tokens.shape[1]
    inputs = tokens[:, width - (context + num_latents - 1):]  # [B, M + n - 1]
    logits, cache = model.forward(inputs, num_latents=num_latents)

    pad = capacity - num_latents
    latent_keys = jnp.pad(cache.latent_keys, ((0, 0), (0, 0), (0, pad), (0, 0), (0, 0)))
    latent_values = jnp.pad(cache.latent_values, ((0, 0), (0, 0), (0, pad), (0, 0), (0, 0)))
    latent_valid = jnp.pad(inputs[:, -num_latents:] != PAD_ID, ((0, 0), (0, pad)))
    return DecodeState(
        tokens=tokens,
        input_keys=cache.input_keys[:, -context:],
        input_values=cache.input_values[:, -context:],
        latent_keys=latent_keys,
        latent_values=latent_values,
        latent_valid=latent_valid,
        latent_count=jnp.asarray(num_latents, jnp.int32),
        logits=logits[:, -1],
    )


def cached_step(model: PerceiverAR, state: DecodeState, token: jax.Array) -> DecodeState:
    """Append `token` [B] with one new latent; requires latent_count < N."""
    context = model.config.max_context
    capacity = _capacity(state)
    slot = state.latent_count

    # 1. The new input's cross-attention keys and values join the window of the last M inputs.
    embedded = model.embed(token[:, None])  # [B, 1, D]
    keys, values = model.cross_attention.input_keys_values(embedded)  # [B, 1, H, K]
    input_keys = _append(state.input_keys, keys)
    input_values = _append(state.input_values, values)
    tokens = _append(state.tokens, token[:, None])
    input_valid = tokens[:, -context:] != PAD_ID  # [B, M]

    # 2. One new latent on the newest position attends to the M inputs.
    input_positions = jnp.arange(context)
    latent = model.cross_attention(
        embedded, input_positions[-1:], input_keys, input_values, input_positions, input_valid
    )  # [B, 1, D]

    # 3. Each layer appends the latent's keys and values and attends to the cached latents.
    latent_valid = state.latent_valid.at[:, slot].set(token != PAD_ID)
    latent_positions = jnp.arange(capacity)
    latent_keys, latent_values = [], []
    for layer, block in enumerate(model.blocks):
        normed = block.attention_norm(latent)
        new_keys, new_values = block.attention.keys_values(normed)  # [B, 1, H, K]
        layer_keys = jax.lax.dynamic_update_slice_in_dim(state.latent_keys[layer], new_keys, slot, axis=1)
        layer_values = jax.lax.dynamic_update_slice_in_dim(state.latent_values[layer], new_values, slot, axis=1)
        latent = block.attend(latent, normed, layer_keys, layer_values, slot[None], latent_positions, latent_valid)
        latent_keys.append(layer_keys)
        latent_values.append(layer_values)

    logits = model.head(model.final_norm(latent))[:, 0]  # [B, V]
    return DecodeState(
        tokens=tokens,
        input_keys=input_keys,
        input_values=input_values,
        latent_keys=jnp.stack(latent_keys),
        latent_values=jnp.stack(latent_values),
        latent_valid=latent_valid,
        latent_count=slot + 1,
        logits=logits,
    )


def _capacity(state: DecodeState) -> int:
    """N, the number of latent slots of the cache (static: part of the state's shape)."""
    return state.latent_valid.shape[1]


def next_latent_count(count: jax.Array, capacity: int) -> jax.Array:
    """Latents of the pass that follows one with `count` latents: one more, or a refill."""
    return jnp.where(count < capacity, count + 1, refill_latents(capacity))


def uncached_step(model: PerceiverAR, state: DecodeState, token: jax.Array) -> DecodeState:
    """Append `token` [B] with a full forward pass over all W tokens, as many latents as the cache would use."""
    capacity = _capacity(state)
    tokens = _append(state.tokens, token[:, None])
    count = next_latent_count(state.latent_count, capacity)
    # Run all N latents (static shapes), but treat all except the last `count` as padding.
    latent_mask = jnp.arange(capacity) >= capacity - count
    logits = model(tokens, num_latents=capacity, latent_mask=latent_mask)[:, -1]
    return dataclasses.replace(state, tokens=tokens, latent_count=count, logits=logits)


def decode_step(model: PerceiverAR, state: DecodeState, token: jax.Array, use_cache: bool) -> DecodeState:
    if not use_cache:
        return uncached_step(model, state, token)
    capacity = _capacity(state)

    def refill(state):
        tokens = _append(state.tokens, token[:, None])
        return full_pass(model, tokens, refill_latents(capacity), capacity)

    return jax.lax.cond(
        state.latent_count < capacity, lambda s: cached_step(model, s, token), refill, state
    )


# ---------------------------------------------------------------------------------------------
# The generation loop.


@dataclasses.dataclass(frozen=True)
class GenerationResult:
    tokens: np.ndarray  # [B, S] int32: generated ids, PAD after an EOS
    lengths: np.ndarray  # [B] tokens generated before (and including) EOS
    compile_seconds: float  # compiling the prime pass and the decoding loop (0 when reused)
    prime_seconds: float  # the prime pass: time to the first token's logits
    decode_seconds: float  # the decoding loop

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per second of decoding, summed over variations."""
        return float(self.lengths.sum()) / max(self.decode_seconds, 1e-9)


class Sampler:
    """Generates continuations of one prompt as B variations in lockstep.

    Compiled functions depend only on B, the chunk size, the latents and the sampling config,
    so generations of any length reuse them. `generate` runs `chunk_size` steps per jitted
    call and reports progress between calls. `num_latents` (default: the model's trained
    latents, and at most that many) sets N, the latent cache capacity.
    """

    def __init__(self, model: PerceiverAR, sampling: SamplingConfig, *, use_cache: bool = True,
                 chunk_size: int = 32, num_latents: int | None = None):
        self.config = model.config
        self.num_latents = self.config.num_latents if num_latents is None else num_latents
        if not 1 <= self.num_latents <= self.config.num_latents:
            raise ConfigError(
                f"latents={self.num_latents} is invalid: use 1 to {self.config.num_latents}, "
                "the latents the model was trained with"
            )
        self.graphdef, self.params = nnx.split(model)
        self.sampling = sampling
        self.use_cache = use_cache
        self.chunk_size = chunk_size
        self.window = self.config.max_context + self.num_latents - 1
        self._prime = jax.jit(self._prime_impl)
        self._chunk = jax.jit(self._chunk_impl)
        self._compiled: dict[int, tuple] = {}

    def _model(self, params) -> PerceiverAR:
        return nnx.merge(self.graphdef, params)

    def _prime_impl(self, params, tokens: jax.Array) -> DecodeState:
        # Priming is one full pass with N/2 latents, the smallest pass of the schedule.
        return full_pass(self._model(params), tokens, refill_latents(self.num_latents), self.num_latents)

    def _chunk_impl(self, params, state: DecodeState, done: jax.Array, key: jax.Array, start: jax.Array):
        model = self._model(params)

        def body(index, carry):
            state, done, outputs = carry
            step_key = jax.random.fold_in(key, start + index)
            token = sample_logits(state.logits, step_key, self.sampling)
            token = jnp.where(done, PAD_ID, token)
            done = done | (token == EOS_ID)
            outputs = outputs.at[:, index].set(token)
            state = decode_step(model, state, token, self.use_cache)
            return state, done, outputs

        outputs = jnp.zeros((done.shape[0], self.chunk_size), jnp.int32)
        return jax.lax.fori_loop(0, self.chunk_size, body, (state, done, outputs))

    def prime_tokens(self, prompt: np.ndarray, num_variations: int) -> jax.Array:
        """Window [B, W] holding the prompt's last W tokens, left-padded."""
        prompt = np.asarray(prompt, np.int32)[-self.window:]
        window = np.full((num_variations, self.window), PAD_ID, np.int32)
        window[:, self.window - len(prompt):] = prompt
        return jnp.asarray(window)

    def compiled(self, num_variations: int) -> tuple[Callable, Callable, float]:
        """(prime, chunk) compiled for B = `num_variations`, and the seconds compiling took."""
        if num_variations in self._compiled:
            prime, chunk = self._compiled[num_variations]
            return prime, chunk, 0.0
        started = time.perf_counter()
        tokens = jax.ShapeDtypeStruct((num_variations, self.window), jnp.int32)
        prime = self._prime.lower(self.params, tokens).compile()
        state = jax.eval_shape(self._prime_impl, self.params, tokens)
        done = jax.ShapeDtypeStruct((num_variations,), jnp.bool_)
        key = jax.eval_shape(lambda: jax.random.key(0))
        start = jax.ShapeDtypeStruct((), jnp.int32)
        chunk = self._chunk.lower(self.params, state, done, key, start).compile()
        self._compiled[num_variations] = (prime, chunk)
        return prime, chunk, time.perf_counter() - started

    def generate(self, prompt: np.ndarray, *, num_tokens: int, num_variations: int = 1, seed: int = 0,
                 should_stop: Callable[[np.ndarray], bool] | None = None,
                 on_chunk: Callable[[int], None] | None = None) -> GenerationResult:
        """Generate up to `num_tokens` tokens after `prompt` (ids, starting with EOS for a new piece).

        `should_stop(tokens [B, S])` is asked after every chunk (for example: every variation
        has reached a duration); `on_chunk(tokens_so_far)` reports progress.
        """
        if len(prompt) == 0:
            raise ValueError("the prompt must hold at least one token (EOS starts a new piece)")
        prime, chunk, compile_seconds = self.compiled(num_variations)

        started = time.perf_counter()
        state = jax.block_until_ready(prime(self.params, self.prime_tokens(prompt, num_variations)))
        prime_seconds = time.perf_counter() - started

        started = time.perf_counter()
        done = jnp.zeros((num_variations,), bool)
        key = jax.random.key(seed)
        chunks = []
        generated = 0
        while generated < num_tokens:
            state, done, outputs = chunk(self.params, state, done, key, jnp.asarray(generated, jnp.int32))
            chunks.append(np.asarray(outputs))
            generated += self.chunk_size
            if on_chunk is not None:
                on_chunk(min(generated, num_tokens))
            tokens = np.concatenate(chunks, axis=1)
            if bool(np.all(np.asarray(done))) or (should_stop is not None and should_stop(tokens[:, :num_tokens])):
                break
        decode_seconds = time.perf_counter() - started

        tokens = np.concatenate(chunks, axis=1)[:, :num_tokens]
        lengths = np.array([_length_through_eos(row) for row in tokens])
        return GenerationResult(tokens, lengths, compile_seconds, prime_seconds, decode_seconds)


def _length_through_eos(row: np.ndarray) -> int:
    ends = np.flatnonzero(row == EOS_ID)
    return int(ends[0]) + 1 if len(ends) else len(row)
