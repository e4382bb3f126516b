"""Autoregressive generation with a key/value cache, and the full-pass reference.

Axis legend: B variations, M context (max_context), N latents (the cache capacity), L layers,
H heads, K channels per head, V vocabulary, W = M + N - 1 tokens kept for full passes.

N defaults to the latents the model was trained with; `Sampler(num_latents=...)` samples with
fewer, which Perceiver AR allows because latents are not parameters. The cache capacity is read
from the decode state's shapes, so every step function works with any N.

The cache keeps, for the B variations generated in lockstep:
- the cross-attention keys and values of the last M inputs (a sliding window), and
- the keys and values of up to N latents in every self-attention layer.

Per new token the sampler embeds it and writes its keys and values over the oldest input. Then
one new latent runs through the cross-attention and every layer, adding its keys and values
to the latent caches, and gives the logits: O(M + L*N) work instead of a full forward pass.

When the latent caches are full (N entries) they are not rolled, because a rolled cache would
make predictions depend on latents computed from other windows. Instead one full forward pass
over the current window with N/2 latents refills them. So the prediction after every token
equals a full forward pass over the last M + n - 1 tokens with n latents, where n steps through
N/2, N/2 + 1, ..., N, N/2, ... and each latent sees the M inputs up to its own position. The
uncached mode (`use_cache=False`) computes exactly that full pass at every step, with the same
n, so both modes produce the same generation; a test checks it.

Positions and rotary: a full pass gives every input its place in the current window (0 to
M - 1), so positions never leave the trained range however long the generation runs. Rotary
attention scores depend only on the distance between query and key, so the cache stores keys
already rotated and a cached step rotates only its new key and query; rotating all M cached
keys again at every step cost more than the rest of the step on a CPU. Each full pass starts a
frame in which input j of the window has position j. The s-th cached step after it (s from 0)
adds input M + s, whose latent queries from that position, and overwrites buffer slot s, which
holds the oldest input. Because s < N/2 <= M, the buffer never wraps. Latent slot i has
position i.

Document positions: a model with axis embeddings also needs each input's index in its
document. The prompt starts the document, so prompt token i has index i, and the state keeps
the index of its newest token (`position`). Full passes give their window the indices that end
there, and a cached step embeds its new token at the next index.

The cache is float32 in a [B, H, T, K] layout: a single query then reads keys and values
without the conversion and transpose that XLA's CPU backend otherwise inserts for every step.
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
from pact.model import PAD_ID, Attention, PerceiverAR, apply_rotary, embed_inputs
from pact.encodings.base import PairedEvents
from pact.sampling import SamplingConfig, sample_logits

EOS_ID = 1
_MASKED = -1e30  # as in pact.attention: finite, so that a masked logit never produces NaN


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DecodeState:
    """Everything the next generation step needs.

    tokens         [B, W]           the last W tokens, left-padded
    input_keys     [B, H, M, K]     rotated cross-attention keys of the last M tokens: slot s
                                    below `shift` contains the s-th input since the last full
                                    pass, slot j from `shift` on window input j of that pass
    input_values   [B, H, M, K]     in the same slots
    latent_keys    L x [B, H, N, K] one array per layer, so that a step reads a layer without
                                    slicing (a copy on the CPU); rotated; slots
                                    0..latent_count-1 hold the cached latents
    latent_values  L x [B, H, N, K]
    latent_valid   [B, N]           slots holding a real (non-padding) latent
    latent_count   []               latents in the cache, the n of the equivalent full pass
    position       []               index in the document of the newest token of `tokens`
    logits         [B, V]           float32 logits for the next token

    `shift`, the number of cached steps since the last full pass, is latent_count - N/2. Keys
    and values hold the model's compute-dtype values stored as float32.
    """

    tokens: jax.Array
    input_keys: jax.Array
    input_values: jax.Array
    latent_keys: tuple[jax.Array, ...]
    latent_values: tuple[jax.Array, ...]
    latent_valid: jax.Array
    latent_count: jax.Array
    position: jax.Array
    logits: jax.Array


def refill_latents(num_latents: int) -> int:
    """Latents of the full pass that refills a full cache of `num_latents` (N/2)."""
    return max(num_latents // 2, 1)


def _append(window: jax.Array, new: jax.Array) -> jax.Array:
    """Shift `window` [B, T, ...] left by one and put `new` [B, 1, ...] at the end."""
    return jnp.concatenate([window[:, 1:], new], axis=1)


def _rotate(module: Attention, x: jax.Array, positions: jax.Array) -> jax.Array:
    """Apply `module`'s rotary embedding to x [B, T, H, K] at positions [T], in x's dtype."""
    return apply_rotary(x, positions, module.rotary_dim, module.rotary_base)


def _cache_layout(x: jax.Array) -> jax.Array:
    """[..., T, H, K] in the compute dtype -> [..., H, T, K] float32."""
    return jnp.swapaxes(x, -3, -2).astype(jnp.float32)


def window_positions(position: jax.Array, length: int) -> jax.Array:
    """Document indices [1, length] of a window of `length` tokens whose newest is at `position`."""
    return (position - (length - 1) + jnp.arange(length, dtype=jnp.int32))[None, :]


def full_pass(model: PerceiverAR, tokens: jax.Array, num_latents: int, capacity: int | None = None,
              *, position: jax.Array | int) -> DecodeState:
    """Decode state after one full forward pass with `num_latents` latents over `tokens` [B, W].

    `capacity` is the N of the latent caches; the default is the model's trained latents.
    `position` is the document index of the last token of `tokens`.
    """
    config = model.config
    context = config.max_context
    capacity = capacity or config.num_latents
    width = tokens.shape[1]
    position = jnp.asarray(position, jnp.int32)
    inputs = tokens[:, width - (context + num_latents - 1):]  # [B, M + n - 1]
    logits, cache = model.forward(inputs, positions=window_positions(position, inputs.shape[1]),
                                  num_latents=num_latents)

    # Rotate the cached keys once, by window position and by latent slot.
    input_keys = _rotate(model.cross_attention.attention, cache.input_keys[:, -context:], jnp.arange(context))
    slots = jnp.arange(num_latents)
    latent_keys = [_rotate(block.attention, keys, slots) for block, keys in zip(model.blocks, cache.latent_keys)]

    pad = ((0, 0), (0, 0), (0, capacity - num_latents), (0, 0))
    return DecodeState(
        tokens=tokens,
        input_keys=_cache_layout(input_keys),
        input_values=_cache_layout(cache.input_values[:, -context:]),
        latent_keys=tuple(jnp.pad(_cache_layout(keys), pad) for keys in latent_keys),
        latent_values=tuple(jnp.pad(_cache_layout(values), pad) for values in cache.latent_values),
        latent_valid=jnp.pad(inputs[:, -num_latents:] != PAD_ID, ((0, 0), (0, capacity - num_latents))),
        latent_count=jnp.asarray(num_latents, jnp.int32),
        position=position,
        logits=logits[:, -1],
    )


def _attend_one(module: Attention, queries: jax.Array, rotary_position: jax.Array, keys: jax.Array,
                values: jax.Array, allowed: jax.Array, new_key: jax.Array, new_value: jax.Array) -> jax.Array:
    """`Attention.attend` of one query onto cached keys and its own new key -> [B, 1, D] float32.

    queries [B, 1, H, K] are unrotated. `keys` and `values` [B, H, T, K] are the cache before
    this step, and `allowed` [B, T] marks the entries the query may see. `new_key` and
    `new_value` [B, H, K] are the query's own entry, which is always visible. Reading the
    cache before it is updated lets XLA update it in place. The steps and roundings are the
    model's (`pact.attention`'s dense kernel); a test checks that cached steps equal full passes.
    """
    queries = _rotate(module, queries, rotary_position[None])[:, 0].astype(jnp.float32)  # [B, H, K]
    logits = jnp.concatenate([
        jnp.einsum("bhk,bhtk->bht", queries, keys),
        jnp.einsum("bhk,bhk->bh", queries, new_key)[..., None],
    ], axis=-1) * queries.shape[-1] ** -0.5  # [B, H, T + 1]
    allowed = jnp.concatenate([allowed, jnp.ones_like(allowed[:, :1])], axis=-1)
    logits = jnp.where(allowed[:, None, :], logits, _MASKED)
    weights = jax.nn.softmax(logits, axis=-1).astype(module.compute_dtype).astype(jnp.float32)
    out = jnp.einsum("bht,bhtk->bhk", weights[..., :-1], values) + weights[..., -1:] * new_value  # [B, H, K]
    return module.output(out.reshape(out.shape[0], 1, -1).astype(module.compute_dtype))


def _after(anchor: jax.Array, values):
    """Return `values` (a pytree) made to depend on `anchor` [B, V], without changing them.

    XLA orders an operation only after its inputs. The cache writes of a step do not depend
    on its reads, and XLA's CPU backend (jax 0.10.2) then scheduled the writes first and
    copied each cache at every step to keep the old values for the reads. Writes that depend
    on the logits, computed from every read, update the caches in place. An optimization
    barrier did not survive compilation there. Adding 0 * anchor is exact for finite logits.
    """
    zero = 0.0 * anchor[0, 0]
    return jax.tree.map(lambda x: x + zero.astype(x.dtype), values)


def cached_step(model: PerceiverAR, state: DecodeState, token: jax.Array) -> DecodeState:
    """Append `token` [B] with one new latent; requires latent_count < N."""
    context = model.config.max_context
    capacity = _capacity(state)
    slot = state.latent_count
    shift = slot - refill_latents(capacity)  # cached steps since the last full pass
    cross = model.cross_attention

    # 1. The new input's keys and values replace the oldest input, at buffer slot `shift`.
    #    Every other input in the buffer is in the window and before the new one, so only
    #    padding is masked.
    position = state.position + 1
    embedded = embed_inputs(model, token[:, None], position[None, None])  # [B, 1, D]
    keys, values = cross.input_keys_values(embedded)  # [B, 1, H, K]
    rotary_position = context + shift
    keys = _cache_layout(_rotate(cross.attention, keys, rotary_position[None]))[:, :, 0]  # [B, H, K]
    values = _cache_layout(values)[:, :, 0]
    tokens = _append(state.tokens, token[:, None])
    buffer_tokens = jnp.roll(tokens[:, -context:], shift + 1, axis=1)  # [B, M] in buffer slot order
    input_allowed = (buffer_tokens != PAD_ID).at[:, shift].set(False)  # the replaced input

    # 2. One new latent on the newest position attends to the M inputs, as `CrossAttentionBlock`
    #    does without dropout.
    latent = embedded
    queries = cross.attention.queries(cross.query_norm(latent))
    latent = latent + _attend_one(cross.attention, queries, rotary_position, state.input_keys,
                                  state.input_values, input_allowed, keys, values)
    latent = latent + cross.mlp(cross.mlp_norm(latent))  # [B, 1, D]

    # 3. Each layer attends to the cached latents and its own, as `SelfAttentionBlock.attend`
    #    does without dropout. Slots from `slot` on are still empty (invalid), which keeps the
    #    attention causal.
    latent_keys, latent_values = [], []
    for layer, block in enumerate(model.blocks):
        normed = block.attention_norm(latent)
        new_keys, new_values = block.attention.keys_values(normed)  # [B, 1, H, K]
        new_keys = _cache_layout(_rotate(block.attention, new_keys, slot[None]))[:, :, 0]  # [B, H, K]
        new_values = _cache_layout(new_values)[:, :, 0]
        queries = block.attention.queries(normed)
        latent = latent + _attend_one(block.attention, queries, slot, state.latent_keys[layer],
                                      state.latent_values[layer], state.latent_valid, new_keys, new_values)
        latent = latent + block.mlp(block.mlp_norm(latent))
        latent_keys.append(new_keys)
        latent_values.append(new_values)
    logits = model.head(model.final_norm(latent))[:, 0]  # [B, V]

    # 4. Store the new entries in the caches, in place once every read of the old caches is done.
    keys, values, latent_keys, latent_values = _after(logits, (keys, values, latent_keys, latent_values))
    input_keys = jax.lax.dynamic_update_slice_in_dim(state.input_keys, keys[:, :, None], shift, axis=2)
    input_values = jax.lax.dynamic_update_slice_in_dim(state.input_values, values[:, :, None], shift, axis=2)
    latent_keys = tuple(
        jax.lax.dynamic_update_slice_in_dim(cache, new[:, :, None], slot, axis=2)
        for cache, new in zip(state.latent_keys, latent_keys)
    )
    latent_values = tuple(
        jax.lax.dynamic_update_slice_in_dim(cache, new[:, :, None], slot, axis=2)
        for cache, new in zip(state.latent_values, latent_values)
    )
    return DecodeState(
        tokens=tokens,
        input_keys=input_keys,
        input_values=input_values,
        latent_keys=latent_keys,
        latent_values=latent_values,
        latent_valid=state.latent_valid.at[:, slot].set(token != PAD_ID),
        latent_count=slot + 1,
        position=position,
        logits=logits,
    )


def _capacity(state: DecodeState) -> int:
    """N, the number of latent slots of the cache (static: part of the state's shape)."""
    return state.latent_valid.shape[1]


def next_latent_count(count: jax.Array, capacity: int) -> jax.Array:
    """Latents of the pass that follows one with `count` latents: one more, or a refill."""
    return jnp.where(count < capacity, count + 1, refill_latents(capacity))


def refill_step(model: PerceiverAR, state: DecodeState, token: jax.Array) -> DecodeState:
    """Append `token` [B] with a full pass with N/2 latents; the step after the caches are full."""
    capacity = _capacity(state)
    tokens = _append(state.tokens, token[:, None])
    return full_pass(model, tokens, refill_latents(capacity), capacity, position=state.position + 1)


def uncached_step(model: PerceiverAR, state: DecodeState, token: jax.Array) -> DecodeState:
    """Append `token` [B] with a full forward pass over all W tokens, as many latents as the cache would use."""
    capacity = _capacity(state)
    tokens = _append(state.tokens, token[:, None])
    position = state.position + 1
    count = next_latent_count(state.latent_count, capacity)
    # Run all N latents (static shapes), but treat all except the last `count` as padding.
    latent_mask = jnp.arange(capacity) >= capacity - count
    positions = window_positions(position, tokens.shape[1])
    logits = model(tokens, positions=positions, num_latents=capacity, latent_mask=latent_mask)[:, -1]
    return dataclasses.replace(state, tokens=tokens, latent_count=count, position=position, logits=logits)


def decode_step(model: PerceiverAR, state: DecodeState, token: jax.Array, use_cache: bool) -> DecodeState:
    """Append `token` [B] by the schedule: a cached step, a refill once the caches are full, or
    (without the cache) a full pass."""
    if not use_cache:
        return uncached_step(model, state, token)
    return jax.lax.cond(
        state.latent_count < _capacity(state),
        lambda s: cached_step(model, s, token),
        lambda s: refill_step(model, s, token),
        state,
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


def _cast_kernels(params: dict, dtype: jnp.dtype) -> dict:
    """Casts every matmul kernel to the compute dtype, as the layers do at each call.

    A cached step reads every weight once for one event, so it is bound by memory traffic: a
    bfloat16 copy halves the bytes read per step and leaves every result unchanged.
    """
    def convert(path, value):
        return value.astype(dtype) if getattr(path[-1], "key", None) == "kernel" else value

    return jax.tree_util.tree_map_with_path(convert, params)


class Sampler:
    """Generates continuations of one prompt as B variations in lockstep.

    Compiled functions depend only on B, the chunk size, the latents and the sampling config,
    so generations of any length reuse them. `generate` runs `chunk_size` steps per jitted
    call and reports progress between calls. `num_latents` (default: the model's trained
    latents, and at most that many) sets N, the latent cache capacity.

    With `paired_events` (the tokenizer's `PairedEvents`) the sampler counts the open events
    of every slot, from the prompt on, and never draws a closing id whose slot has none open
    (see `_valid_events`): no NOTE_OFF of a key that is not down.
    """

    def __init__(self, model: PerceiverAR, sampling: SamplingConfig, *, use_cache: bool = True,
                 chunk_size: int = 32, num_latents: int | None = None,
                 paired_events: PairedEvents | None = None):
        self.config = model.config
        self.num_latents = self.config.num_latents if num_latents is None else num_latents
        if not 1 <= self.num_latents <= self.config.num_latents:
            raise ConfigError(
                f"latents={self.num_latents} is invalid: use 1 to {self.config.num_latents}, "
                "the latents the model was trained with"
            )
        self.graphdef, state = nnx.split(model)
        self.params = _cast_kernels(nnx.to_pure_dict(state), jnp.dtype(self.config.compute_dtype))
        self.sampling = sampling
        self.use_cache = use_cache
        self.chunk_size = chunk_size
        self.window = self.config.max_context + self.num_latents - 1
        self.paired_events = paired_events
        self._prime = jax.jit(self._prime_impl)
        self._chunk = jax.jit(self._chunk_impl)
        self._compiled: dict[int, tuple] = {}

    def _model(self, params) -> PerceiverAR:
        return nnx.merge(self.graphdef, params)

    def _prime_impl(self, params, tokens: jax.Array, position: jax.Array) -> DecodeState:
        # Priming is one full pass with N/2 latents, the smallest pass of the schedule.
        return full_pass(self._model(params), tokens, refill_latents(self.num_latents), self.num_latents,
                         position=position)

    def _chunk_impl(self, params, state: DecodeState, done: jax.Array, open_counts: jax.Array,
                    key: jax.Array, start: jax.Array):
        """Run `chunk_size` steps: (state, done [B], open_counts [B, S], outputs [B, chunk_size]) after them."""
        model = self._model(params)
        chunk_size = self.chunk_size
        pairs = self.paired_events

        def step(index, carry, advance):
            state, done, open_counts, outputs = carry
            step_key = jax.random.fold_in(key, start + index)
            logits = state.logits
            if pairs is not None:
                logits = _valid_events(logits, open_counts, pairs)
            token = sample_logits(logits, step_key, self.sampling)
            token = jnp.where(done, PAD_ID, token)
            done = done | (token == EOS_ID)
            outputs = outputs.at[:, index].set(token)
            if pairs is not None:
                open_counts = _count_open_events(open_counts, token, pairs)
            return advance(model, state, token), done, open_counts, outputs

        outputs = jnp.zeros((done.shape[0], chunk_size), jnp.int32)
        carry = (state, done, open_counts, outputs)
        if not self.use_cache:
            return jax.lax.fori_loop(0, chunk_size, lambda i, c: step(i, c, uncached_step), carry)

        # The schedule is the same for every variation, so cached steps run in a plain loop up to
        # the step that fills the caches, and the refill step follows once per segment. A
        # `lax.cond` at every step made XLA copy the whole state each time.
        def segment(loop):
            index, carry = loop
            end = jnp.minimum(chunk_size, index + _capacity(carry[0]) - carry[0].latent_count)
            carry = jax.lax.fori_loop(index, end, lambda i, c: step(i, c, cached_step), carry)
            refill = end < chunk_size
            carry = jax.lax.cond(refill, lambda c: step(end, c, refill_step), lambda c: c, carry)
            return jnp.where(refill, end + 1, end), carry

        return jax.lax.while_loop(lambda loop: loop[0] < chunk_size, segment, (jnp.asarray(0), carry))[1]

    @property
    def _num_slots(self) -> int:
        return 0 if self.paired_events is None else self.paired_events.num_slots

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
        position = jax.ShapeDtypeStruct((), jnp.int32)
        prime = self._prime.lower(self.params, tokens, position).compile()
        state = jax.eval_shape(self._prime_impl, self.params, tokens, position)
        done = jax.ShapeDtypeStruct((num_variations,), jnp.bool_)
        open_counts = jax.ShapeDtypeStruct((num_variations, self._num_slots), jnp.int32)
        key = jax.eval_shape(lambda: jax.random.key(0))
        start = jax.ShapeDtypeStruct((), jnp.int32)
        chunk = self._chunk.lower(self.params, state, done, open_counts, key, start).compile()
        self._compiled[num_variations] = (prime, chunk)
        return prime, chunk, time.perf_counter() - started

    def generate(self, prompt: np.ndarray, *, num_tokens: int, num_variations: int = 1, seed: int = 0,
                 should_stop: Callable[[np.ndarray], bool] | None = None,
                 on_chunk: Callable[[int], None] | None = None) -> GenerationResult:
        """Generate up to `num_tokens` tokens after `prompt` (ids, starting with EOS for a new piece).

        The prompt is the start of the document: prompt token i has document index i.

        `should_stop(tokens [B, S])` is asked after every chunk (for example: every variation
        has reached a duration); `on_chunk(tokens_so_far)` reports progress.
        """
        if len(prompt) == 0:
            raise ValueError("the prompt must hold at least one token (EOS starts a new piece)")
        prime, chunk, compile_seconds = self.compiled(num_variations)

        started = time.perf_counter()
        position = jnp.asarray(len(prompt) - 1, jnp.int32)
        state = jax.block_until_ready(prime(self.params, self.prime_tokens(prompt, num_variations), position))
        prime_seconds = time.perf_counter() - started

        started = time.perf_counter()
        done = jnp.zeros((num_variations,), bool)
        open_counts = np.zeros((num_variations, self._num_slots), np.int32)
        if self.paired_events is not None:
            open_counts[:] = self.paired_events.open_counts(prompt)
        open_counts = jnp.asarray(open_counts)
        key = jax.random.key(seed)
        chunks = []
        generated = 0
        while generated < num_tokens:
            state, done, open_counts, outputs = chunk(self.params, state, done, open_counts, key,
                                                      jnp.asarray(generated, jnp.int32))
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


def _valid_events(logits: jax.Array, open_counts: jax.Array, pairs: PairedEvents) -> jax.Array:
    """Mask invalid closing ids in logits [B, V] (returned as float32), keeping the chance of closing one.

    A closing id is valid while its slot has open events. The model's total probability of
    the closing ids is kept and shared among the valid ones in proportion to their own, so
    the model still releases a key as often as it means to, and releases one that is down.
    With no slot open, every closing id is masked and the other ids share the probability.
    """
    logits = logits.astype(jnp.float32)
    closing = jnp.asarray(pairs.closes) >= 0  # [V]
    slot_open = jnp.take(open_counts, jnp.maximum(jnp.asarray(pairs.closes), 0), axis=1) > 0  # [B, V]
    valid_closing = closing & slot_open

    # log P(any closing id) - log P(a valid closing id), added to each valid closing id.
    closing_mass = jax.nn.logsumexp(jnp.where(closing, logits, -jnp.inf), axis=-1, keepdims=True)  # [B, 1]
    valid_mass = jax.nn.logsumexp(jnp.where(valid_closing, logits, -jnp.inf), axis=-1, keepdims=True)
    shift = jnp.where(jnp.isfinite(valid_mass), closing_mass - valid_mass, 0.0)
    logits = jnp.where(valid_closing, logits + shift, logits)
    return jnp.where(~closing | slot_open, logits, _MASKED)


def _count_open_events(open_counts: jax.Array, token: jax.Array, pairs: PairedEvents) -> jax.Array:
    """Update the open events [B, S] with each row's new token [B]. A slot of -1 one-hot encodes to zeros."""
    num_slots = open_counts.shape[1]
    opened = jax.nn.one_hot(jnp.asarray(pairs.opens)[token], num_slots, dtype=jnp.int32)
    closed = jax.nn.one_hot(jnp.asarray(pairs.closes)[token], num_slots, dtype=jnp.int32)
    return open_counts + opened - closed


def _length_through_eos(row: np.ndarray) -> int:
    ends = np.flatnonzero(row == EOS_ID)
    return int(ends[0]) + 1 if len(ends) else len(row)
