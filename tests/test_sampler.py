"""Cached decoding equals full forward passes; sampling strategies pick what they should."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pact import sampler as sampler_lib
from pact.config import ModelConfig
from pact.encodings import EOS_ID, PairedEvents
from pact.errors import ConfigError
from pact.model import PerceiverAR
from pact.sampling import SamplingConfig, filter_logits, sample_logits

VOCAB = 40


@pytest.fixture(autouse=True)
def highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


# A grid of 48 cells: the longest test reaches document index 64, past its end.
AXES = (4, 4, 3)


# Absolute positions of the document index: none, learned axis tables, or fixed sinusoids.
POSITIONS = [None, AXES, "sinusoids"]


def _model(context=16, latents=6, head_scale=1.0, allow_eos=True, axes=None) -> PerceiverAR:
    sinusoids = axes == "sinusoids"
    config = ModelConfig(
        vocab_size=VOCAB, max_context=context, num_latents=latents, num_channels=32, num_heads=2,
        num_layers=2, dropout=0.0, cross_attend_dropout=0.0, compute_dtype="float32",
        position_axes=None if sinusoids else axes, absolute_positions=sinusoids,
    )
    model = PerceiverAR(config, rngs=nnx.Rngs(0))
    model.head.kernel[...] = head_scale * jax.random.normal(jax.random.key(1), model.head.kernel[...].shape)
    if not allow_eos:
        model.head.bias[...] = model.head.bias[...].at[sampler_lib.EOS_ID].set(-1e4)
    if axes is not None and not sinusoids:
        # Tables as large as the token embeddings, so that a wrong position shows in the logits.
        for index, table in enumerate(model.axis_embedding.tables):
            shape = table.embedding[...].shape
            table.embedding[...] = jax.random.normal(jax.random.key(10 + index), shape)
    return model


@pytest.mark.parametrize("axes", POSITIONS)
@pytest.mark.parametrize("prompt_length", [1, 4, 20])
def test_cached_logits_equal_full_passes(prompt_length, axes):
    # 45 steps: past the 16-token context and through several refills of the 6-latent cache.
    model = _model(axes=axes)
    sampler = sampler_lib.Sampler(model, SamplingConfig())
    prompt = np.random.default_rng(0).integers(2, VOCAB, size=prompt_length)
    prompt[0] = sampler_lib.EOS_ID
    window = sampler.prime_tokens(prompt, 2)
    cached = uncached = sampler_lib.full_pass(model, window, sampler_lib.refill_latents(6),
                                              position=prompt_length - 1)
    cached_step = jax.jit(lambda state, token: sampler_lib.decode_step(model, state, token, True))
    uncached_step = jax.jit(lambda state, token: sampler_lib.decode_step(model, state, token, False))

    rng = np.random.default_rng(1)
    counts = []
    for step in range(45):
        assert int(cached.latent_count) == int(uncached.latent_count)
        counts.append(int(cached.latent_count))
        np.testing.assert_allclose(
            np.asarray(cached.logits), np.asarray(uncached.logits), atol=1e-4, rtol=1e-5,
            err_msg=f"step {step}, {counts[-1]} latents",
        )
        token = jnp.asarray(rng.integers(2, VOCAB, size=2), jnp.int32)
        cached, uncached = cached_step(cached, token), uncached_step(uncached, token)
    # The schedule went through refills: N/2 .. N, then back to N/2.
    assert counts[:5] == [3, 4, 5, 6, 3]
    assert counts.count(3) >= 10


@pytest.mark.parametrize("axes", POSITIONS)
def test_generate_same_with_and_without_cache(axes):
    model = _model(head_scale=0.2, allow_eos=False, axes=axes)
    prompt = np.array([sampler_lib.EOS_ID, 5, 9])
    cached = sampler_lib.Sampler(model, SamplingConfig(temperature=0.8), chunk_size=8)
    uncached = sampler_lib.Sampler(model, SamplingConfig(temperature=0.8), use_cache=False, chunk_size=8)
    a = cached.generate(prompt, num_tokens=40, num_variations=3, seed=4)
    b = uncached.generate(prompt, num_tokens=40, num_variations=3, seed=4)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert a.tokens.shape == (3, 40)
    # Variations differ from one another.
    assert len({tuple(row) for row in a.tokens}) == 3


@pytest.mark.parametrize("axes", POSITIONS)
def test_fewer_latents_cached_equals_full_passes(axes):
    # A 6-latent model sampled with 4 latents refills its cache from 2 latents. Every
    # prediction equals a full pass over the last M + n - 1 tokens with the same n latents,
    # whose document indices the test counts itself: prompt token i has index i.
    model = _model(head_scale=0.5, axes=axes)
    sampler = sampler_lib.Sampler(model, SamplingConfig(), num_latents=4)
    assert sampler.window == 16 + 4 - 1
    prompt = np.array([sampler_lib.EOS_ID, 7, 3, 12])
    state = jax.jit(sampler._prime_impl)(sampler.params, sampler.prime_tokens(prompt, 2), len(prompt) - 1)
    step = jax.jit(lambda state, token: sampler_lib.decode_step(model, state, token, True))
    full = jax.jit(lambda window, positions, count: model(window, positions=positions, num_latents=count)[:, -1],
                   static_argnums=2)

    rng = np.random.default_rng(2)
    counts = []
    for index in range(10):
        count = int(state.latent_count)
        counts.append(count)
        length = 16 + count - 1
        newest = len(prompt) - 1 + index
        positions = jnp.arange(newest - length + 1, newest + 1)[None, :]
        assert int(state.position) == newest
        expected = full(state.tokens[:, -length:], positions, count)
        np.testing.assert_allclose(np.asarray(state.logits), np.asarray(expected), atol=1e-4, rtol=1e-5,
                                   err_msg=f"step {index}, {count} latents")
        state = step(state, jnp.asarray(rng.integers(2, VOCAB, size=2), jnp.int32))
    assert counts[:6] == [2, 3, 4, 2, 3, 4]


def test_fewer_latents_same_with_and_without_cache():
    model = _model(head_scale=0.2, allow_eos=False)
    prompt = np.array([sampler_lib.EOS_ID, 5, 9])
    cached = sampler_lib.Sampler(model, SamplingConfig(), chunk_size=8, num_latents=3)
    uncached = sampler_lib.Sampler(model, SamplingConfig(), use_cache=False, chunk_size=8, num_latents=3)
    a = cached.generate(prompt, num_tokens=24, num_variations=2, seed=5)
    b = uncached.generate(prompt, num_tokens=24, num_variations=2, seed=5)
    np.testing.assert_array_equal(a.tokens, b.tokens)


def test_axis_embeddings_change_generation():
    # Zeroing the axis tables changes the greedy generation, so the equalities above compare
    # generations that the document indices shape.
    model = _model(head_scale=0.2, allow_eos=False, axes=AXES)
    prompt = np.array([sampler_lib.EOS_ID, 5, 9])
    greedy = SamplingConfig(temperature=0.0)
    with_axes = sampler_lib.Sampler(model, greedy, chunk_size=8).generate(prompt, num_tokens=24)
    for table in model.axis_embedding.tables:
        table.embedding[...] = jnp.zeros_like(table.embedding[...])
    without = sampler_lib.Sampler(model, greedy, chunk_size=8).generate(prompt, num_tokens=24)
    assert not np.array_equal(with_axes.tokens, without.tokens)


@pytest.mark.parametrize("latents", [0, 7])
def test_sampler_latents_outside_range_rejected(latents):
    with pytest.raises(ConfigError, match=f"latents={latents} is invalid: use 1 to 6"):
        sampler_lib.Sampler(_model(), SamplingConfig(), num_latents=latents)


def test_generate_same_seed_same_tokens():
    model = _model(head_scale=0.2, allow_eos=False)
    sampler = sampler_lib.Sampler(model, SamplingConfig(), chunk_size=8)
    prompt = np.array([sampler_lib.EOS_ID])
    first = sampler.generate(prompt, num_tokens=20, num_variations=2, seed=11)
    second = sampler.generate(prompt, num_tokens=20, num_variations=2, seed=11)
    other = sampler.generate(prompt, num_tokens=20, num_variations=2, seed=12)
    np.testing.assert_array_equal(first.tokens, second.tokens)
    assert not np.array_equal(first.tokens, other.tokens)


def test_generation_stops_after_eos():
    model = _model()
    # Make EOS the most likely token everywhere: greedy decoding then ends at once.
    bias = model.head.bias[...]
    model.head.bias[...] = bias.at[sampler_lib.EOS_ID].set(1e4)
    sampler = sampler_lib.Sampler(model, SamplingConfig(temperature=0.0), chunk_size=8)
    result = sampler.generate(np.array([sampler_lib.EOS_ID]), num_tokens=30, num_variations=2)
    assert result.tokens.shape == (2, 8)  # stopped after the first chunk
    np.testing.assert_array_equal(result.tokens[:, 0], sampler_lib.EOS_ID)
    np.testing.assert_array_equal(result.tokens[:, 1:], 0)
    np.testing.assert_array_equal(result.lengths, 1)


# Strategies.


def test_skewed_logits_pick_the_peak():
    logits = jnp.full((4, VOCAB), -5.0).at[:, 7].set(20.0)
    tokens = sample_logits(logits, jax.random.key(0), SamplingConfig())
    np.testing.assert_array_equal(np.asarray(tokens), 7)


def test_top_one_equals_greedy():
    logits = jax.random.normal(jax.random.key(1), (16, VOCAB))
    greedy = sample_logits(logits, jax.random.key(2), SamplingConfig(temperature=0.0))
    top_one = sample_logits(logits, jax.random.key(3), SamplingConfig(top_k=1))
    np.testing.assert_array_equal(np.asarray(top_one), np.asarray(greedy))


def test_padding_never_sampled():
    logits = jnp.zeros((64, 3)).at[:, 0].set(50.0)
    tokens = sample_logits(logits, jax.random.key(4), SamplingConfig())
    assert 0 not in np.asarray(tokens)
    assert int(sample_logits(logits, jax.random.key(4), SamplingConfig(temperature=0.0))[0]) != 0


def test_top_p_keeps_smallest_nucleus():
    probabilities = np.array([[0.0, 0.5, 0.3, 0.15, 0.05]])
    logits = jnp.log(jnp.asarray(probabilities) + 1e-12)
    kept = np.asarray(filter_logits(logits, SamplingConfig(top_p=0.75))) > -1e29
    # 0.5 < 0.75 so token 2 joins; 0.8 >= 0.75 so the nucleus stops there.
    np.testing.assert_array_equal(kept, [[False, True, True, False, False]])
    kept = np.asarray(filter_logits(logits, SamplingConfig(top_p=0.01))) > -1e29
    np.testing.assert_array_equal(kept, [[False, True, False, False, False]])


def test_top_k_and_min_p_filters():
    probabilities = np.array([[0.0, 0.5, 0.3, 0.15, 0.05]])
    logits = jnp.log(jnp.asarray(probabilities) + 1e-12)
    kept = np.asarray(filter_logits(logits, SamplingConfig(top_k=2))) > -1e29
    np.testing.assert_array_equal(kept, [[False, True, True, False, False]])
    # min-p 0.25: keep tokens with at least 0.125 probability.
    kept = np.asarray(filter_logits(logits, SamplingConfig(min_p=0.25))) > -1e29
    np.testing.assert_array_equal(kept, [[False, True, True, True, False]])


@pytest.mark.parametrize("values, text", [
    ({"temperature": -1.0}, "temperature=-1.0"),
    ({"temperature": float("nan")}, "temperature=nan"),
    ({"min_p": float("nan")}, "min-p=nan"),
    ({"top_p": 0.0}, "top-p=0.0"),
    ({"top_p": 1.5}, "top-p=1.5"),
    ({"top_k": -3}, "top-k=-3"),
    ({"min_p": 1.0}, "min-p=1.0"),
])
def test_invalid_sampling_values_rejected(values, text):
    with pytest.raises(ConfigError, match=text):
        SamplingConfig(**values)


# Ids 2-9 open slots 0-7 and ids 10-17 close them, as NOTE_ON and NOTE_OFF of eight keys do.
PAIRS = PairedEvents(
    opens=np.array([-1, -1, *range(8)] + [-1] * (VOCAB - 10), np.int32),
    closes=np.array([-1] * 10 + list(range(8)) + [-1] * (VOCAB - 18), np.int32),
    num_slots=8,
)


def _stray_closings(prompt: np.ndarray, row: np.ndarray) -> tuple[int, int]:
    """(closing ids, closing ids of a slot without open events) in `row` after `prompt`."""
    counts = PAIRS.open_counts(prompt)
    closings = stray = 0
    for token in row:
        if PAIRS.opens[token] >= 0:
            counts[PAIRS.opens[token]] += 1
        elif PAIRS.closes[token] >= 0:
            slot = PAIRS.closes[token]
            closings += 1
            stray += counts[slot] == 0
            counts[slot] = max(counts[slot] - 1, 0)
    return closings, stray


def test_paired_events_are_never_closed_unopened():
    model = _model(head_scale=0.3, allow_eos=False)
    prompt = np.array([EOS_ID, 3, 4, 11])  # opens slots 1 and 2, closes slot 1
    constrained = sampler_lib.Sampler(model, SamplingConfig(), chunk_size=8, paired_events=PAIRS)
    tokens = constrained.generate(prompt, num_tokens=64, num_variations=4, seed=2).tokens
    totals = np.array([_stray_closings(prompt, row) for row in tokens])
    assert totals[:, 0].sum() > 20
    assert totals[:, 1].sum() == 0

    # The same model draws stray closing ids without the constraint.
    free = sampler_lib.Sampler(model, SamplingConfig(), chunk_size=8).generate(
        prompt, num_tokens=64, num_variations=4, seed=2).tokens
    assert sum(_stray_closings(prompt, row)[1] for row in free) > 0

    # The cache does not change constrained generation either.
    uncached = sampler_lib.Sampler(model, SamplingConfig(), use_cache=False, chunk_size=8, paired_events=PAIRS)
    np.testing.assert_array_equal(uncached.generate(prompt, num_tokens=64, num_variations=4, seed=2).tokens, tokens)


def test_valid_events_keep_the_chance_of_closing():
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(2, VOCAB)), jnp.float32)
    open_counts = jnp.asarray([[0, 2, 1, 0, 0, 0, 0, 0], [0] * 8], jnp.int32)
    adjusted = sampler_lib._valid_events(logits, open_counts, PAIRS)
    before, after = jax.nn.softmax(logits), jax.nn.softmax(adjusted)
    closing = slice(10, 18)

    # Row 0: only slots 1 and 2 may close. They share all the closing probability in the
    # ratio the model gave them, and every other id keeps its probability.
    np.testing.assert_allclose(after[0, closing].sum(), before[0, closing].sum(), rtol=1e-5)
    assert np.count_nonzero(np.asarray(after[0, closing]) > 1e-12) == 2
    np.testing.assert_allclose(after[0, 11] / after[0, 12], before[0, 11] / before[0, 12], rtol=1e-5)
    np.testing.assert_allclose(after[0, :10], before[0, :10], rtol=1e-5)

    # Row 1: nothing is open, so no closing id can be drawn and the rest share its probability.
    np.testing.assert_allclose(after[1, closing], 0.0, atol=1e-12)
    np.testing.assert_allclose(after[1, :10] / after[1, :10].sum(), before[1, :10] / before[1, :10].sum(), rtol=1e-5)
