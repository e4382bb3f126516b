"""Perceiver AR: causality, latent counts at call time, initialisation and learning."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from pact.config import ModelConfig
from pact.model import PAD_ID, PerceiverAR, apply_rotary, rotary_channels

VOCAB = 40
CONTEXT = 32
LATENTS = 8


def _config(**changes) -> ModelConfig:
    base = ModelConfig(
        vocab_size=VOCAB, max_context=CONTEXT, num_latents=LATENTS, num_channels=32, num_heads=2,
        num_layers=2, dropout=0.0, cross_attend_dropout=0.0, compute_dtype="float32",
    )
    return dataclasses.replace(base, **changes)


def _model(config: ModelConfig, seed: int = 0) -> PerceiverAR:
    model = PerceiverAR(config, rngs=nnx.Rngs(seed))
    # The head starts at zero (uniform predictions); random weights make every test sensitive.
    model.head.kernel[...] = jax.random.normal(jax.random.key(seed + 1), model.head.kernel[...].shape)
    return model


def _tokens(seed: int, batch: int = 2, length: int = CONTEXT, pad: int = 0) -> jnp.ndarray:
    tokens = np.random.default_rng(seed).integers(2, VOCAB, size=(batch, length))
    tokens[:, :pad] = PAD_ID
    return jnp.asarray(tokens, jnp.int32)


@pytest.fixture(autouse=True)
def highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


@pytest.mark.parametrize("dropout", [0.0, 0.9])
@pytest.mark.parametrize("pad", [0, 27])
def test_latent_ignores_future_tokens(dropout, pad):
    # pad=27 leaves 5 real tokens: fewer than the 8 latents, so the leading latents are padding.
    config = _config(cross_attend_dropout=dropout, dropout=0.1 if dropout else 0.0)
    model = _model(config)
    forward = nnx.jit(lambda model, x, key: model(x, dropout_key=key))
    inputs = _tokens(0, pad=pad)
    key = jax.random.key(7) if dropout else None
    reference = forward(model, inputs, key)
    for latent in range(LATENTS):
        position = CONTEXT - LATENTS + latent
        if position + 1 >= CONTEXT:
            continue
        changed = inputs.at[:, position + 1:].set(_tokens(latent + 1, length=CONTEXT - position - 1))
        logits = forward(model, changed, key)
        np.testing.assert_array_equal(
            np.asarray(logits[:, :latent + 1]), np.asarray(reference[:, :latent + 1]),
            err_msg=f"latent {latent} at position {position} saw a later token",
        )
        assert not np.allclose(np.asarray(logits[:, latent + 1:]), np.asarray(reference[:, latent + 1:]))


def test_dropout_of_every_context_key_keeps_latent_keys():
    # With all context keys dropped, each latent still attends to the latents up to itself and
    # never to a later one.
    config = _config(cross_attend_dropout=0.999999)
    model = _model(config)
    inputs = _tokens(3)
    key = jax.random.key(0)
    reference = model(inputs, dropout_key=key)
    changed = inputs.at[:, -1].set((inputs[:, -1] + 1 - 2) % (VOCAB - 2) + 2)
    logits = model(changed, dropout_key=key)
    np.testing.assert_array_equal(np.asarray(logits[:, :-1]), np.asarray(reference[:, :-1]))
    assert np.isfinite(np.asarray(logits)).all()


def test_latent_count_chosen_at_call_time():
    model = _model(_config())
    inputs = _tokens(4)
    outputs = {count: model(inputs, num_latents=count) for count in (1, 4, LATENTS, 16)}
    for count, logits in outputs.items():
        assert logits.shape == (2, count, VOCAB)
        assert np.isfinite(np.asarray(logits)).all()


def test_cross_attention_output_independent_of_latent_count():
    model = _model(_config())
    inputs = _tokens(5)
    embedded = model.embed(inputs)
    keys, values = model.cross_attention.input_keys_values(embedded)
    positions = jnp.arange(CONTEXT)
    valid = inputs != PAD_ID
    last = {}
    for count in (1, 3, LATENTS, 20):
        latents = model.cross_attention(
            embedded[:, -count:], positions[-count:], keys, values, positions, valid
        )
        last[count] = np.asarray(latents[:, -1])
    for count, value in last.items():
        np.testing.assert_allclose(value, last[1], atol=1e-5, err_msg=f"{count} latents")


def test_head_starts_at_zero():
    model = PerceiverAR(_config(), rngs=nnx.Rngs(0))
    logits = model(_tokens(6))
    np.testing.assert_array_equal(np.asarray(logits), 0.0)


def test_rotary_depends_on_relative_position_only():
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(1, 1, 2, 16)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(1, 1, 2, 16)), jnp.float32)
    dim = rotary_channels(16, 0.5)
    assert dim == 8

    def score(q_position, k_position):
        rotated_q = apply_rotary(q, jnp.array([q_position]), dim, 10_000.0)
        rotated_k = apply_rotary(k, jnp.array([k_position]), dim, 10_000.0)
        return float((rotated_q * rotated_k).sum())

    assert score(5, 2) == pytest.approx(score(105, 102), abs=1e-4)
    assert score(5, 2) != pytest.approx(score(5, 4), abs=1e-3)
    # Channels past the rotary fraction carry no position.
    rotated = apply_rotary(q, jnp.array([9]), dim, 10_000.0)
    np.testing.assert_array_equal(np.asarray(rotated[..., dim:]), np.asarray(q[..., dim:]))


def test_long_input_sees_at_most_context():
    # Inputs longer than max_context (as in sampling): each latent's cross-attention sees only
    # the M inputs up to its own position. Later layers mix latents, so check the block output.
    model = _model(_config())
    length = CONTEXT + LATENTS - 1

    def cross_attention_outputs(inputs):
        embedded = model.embed(inputs)
        keys, values = model.cross_attention.input_keys_values(embedded)
        positions = jnp.arange(length)
        return model.cross_attention(
            embedded[:, -LATENTS:], positions[-LATENTS:], keys, values, positions, inputs != PAD_ID
        )

    inputs = _tokens(8, length=length)
    changed = inputs.at[:, 0].set((inputs[:, 0] + 1 - 2) % (VOCAB - 2) + 2)
    reference, outputs = cross_attention_outputs(inputs), cross_attention_outputs(changed)
    # Latent 0 sits at position M - 1 and sees inputs 0..M-1; the others start after input 0.
    np.testing.assert_array_equal(np.asarray(outputs[:, 1:]), np.asarray(reference[:, 1:]))
    assert not np.allclose(np.asarray(outputs[:, 0]), np.asarray(reference[:, 0]))


@pytest.mark.parametrize("kernel", ["chunked", "cudnn"])
def test_attention_kernels_give_same_logits(kernel):
    if kernel == "cudnn" and jax.default_backend() != "gpu":
        pytest.skip("cuDNN attention needs a GPU; the XLA path of the same call is tested in test_attention")
    reference = _model(_config(attention="xla"))
    other = _model(_config(attention=kernel, attention_chunk_size=8))
    inputs = _tokens(9, pad=5)
    np.testing.assert_allclose(np.asarray(other(inputs)), np.asarray(reference(inputs)), atol=1e-4)


def test_bfloat16_compute_close_to_float32():
    inputs = _tokens(10)
    exact = _model(_config())(inputs)
    low = _model(_config(compute_dtype="bfloat16"))(inputs)
    assert low.dtype == jnp.float32
    scale = float(jnp.abs(exact).max())
    assert float(jnp.abs(low - exact).max()) < 0.05 * scale


def test_remat_gives_same_gradients():
    inputs = _tokens(11)
    targets = _tokens(12, length=LATENTS)

    def gradients(config):
        model = _model(config)
        graphdef, params = nnx.split(model)

        def loss(params):
            logits = nnx.merge(graphdef, params)(inputs)
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

        return jax.grad(loss)(params)

    plain = jax.tree.leaves(gradients(_config()))
    remat = jax.tree.leaves(gradients(_config(remat=True)))
    # Remat recomputes the forward pass inside the backward pass, where XLA may fuse and order
    # float32 sums differently. On one AMD EPYC CPU the largest difference was 2.5e-6 of the
    # leaf's largest gradient. A remat bug would change gradients by a large fraction of it.
    for a, b in zip(plain, remat):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_allclose(b, a, rtol=0, atol=2e-5 * np.abs(a).max())


def test_cross_attend_dropout_keeps_fixed_subset():
    # 24 context positions at rate 0.5 leave 12 of them, plus the 8 latents, as keys.
    model = _model(_config(cross_attend_dropout=0.5))
    inputs = _tokens(13)
    _, cache = model.forward(inputs, dropout_key=jax.random.key(0))
    assert cache.input_keys.shape[:2] == (2, 12 + LATENTS)
    _, evaluation_cache = model.forward(inputs)
    assert evaluation_cache.input_keys.shape[:2] == (2, CONTEXT)

    first = model(inputs, dropout_key=jax.random.key(0))
    again = model(inputs, dropout_key=jax.random.key(0))
    other = model(inputs, dropout_key=jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
    assert not np.allclose(np.asarray(first), np.asarray(other))


# Axis embeddings.

AXES = (4, 5, 3)


def _axis_model(**changes) -> PerceiverAR:
    model = _model(_config(position_axes=AXES, **changes))
    # Tables as large as the token embeddings, so that a wrong position shows in the logits.
    for index, table in enumerate(model.axis_embedding.tables):
        table.embedding[...] = jax.random.normal(jax.random.key(20 + index), table.embedding[...].shape)
    return model


def _document_positions(offset: int, batch: int = 2) -> jnp.ndarray:
    return jnp.broadcast_to(jnp.arange(CONTEXT) + offset, (batch, CONTEXT))


def test_parameters_unchanged_without_axes():
    # Checkpoints written before axis embeddings existed restore into a model without them.
    state = nnx.to_pure_dict(nnx.state(PerceiverAR(_config(), rngs=nnx.Rngs(0)), nnx.Param))
    assert sorted(state) == ["blocks", "cross_attention", "embed", "final_norm", "head"]


def test_positions_ignored_without_axes():
    model = _model(_config())
    inputs = _tokens(14)
    reference = model(inputs)
    shifted = model(inputs, positions=_document_positions(7))
    np.testing.assert_array_equal(np.asarray(shifted), np.asarray(reference))


def test_axis_model_output_depends_on_offset():
    model = _axis_model()
    inputs = _tokens(15)
    start = model(inputs, positions=_document_positions(1))
    shifted = model(inputs, positions=_document_positions(2))
    assert not np.allclose(np.asarray(start), np.asarray(shifted))


def test_axis_model_requires_positions():
    with pytest.raises(ValueError, match="pass `positions`"):
        _axis_model()(_tokens(16))


def test_axis_embedding_of_token_index():
    # Document index p is token index p - 1, so p = 1 is the grid's first cell. The leading
    # EOS (p = 0), padding and p = 61, one past the 60-cell grid, get no embedding.
    model = _axis_model()
    tables = [np.asarray(table.embedding[...]) for table in model.axis_embedding.tables]
    tokens = jnp.asarray([[PAD_ID, 1, 5, 5, 5, 5]], jnp.int32)
    positions = jnp.asarray([[-1, 0, 1, 2, 20, 61]], jnp.int32)
    embedded = np.asarray(model.axis_embedding(tokens, positions))
    np.testing.assert_array_equal(embedded[0, :2], 0.0)
    np.testing.assert_allclose(embedded[0, 2], tables[0][0] + tables[1][0] + tables[2][0], rtol=1e-6)
    np.testing.assert_allclose(embedded[0, 3], tables[0][0] + tables[1][0] + tables[2][1], rtol=1e-6)
    # Token index 19 of a 4x5x3 grid: row 1, column 1, channel 1.
    np.testing.assert_allclose(embedded[0, 4], tables[0][1] + tables[1][1] + tables[2][1], rtol=1e-6)
    np.testing.assert_array_equal(embedded[0, 5], 0.0)


def test_axis_model_padding_positions_ignored():
    # Padding columns carry no embedding, so their document indices do not matter.
    model = _axis_model()
    inputs = _tokens(17, pad=10)
    positions = _document_positions(-9)
    reference = model(inputs, positions=positions)
    scrambled = model(inputs, positions=positions.at[:, :10].set(33))
    np.testing.assert_array_equal(np.asarray(scrambled), np.asarray(reference))


def test_axis_model_dropout_keeps_key_positions():
    # Cross-attend dropout gathers each kept key's document index with its token: at a rate
    # that keeps every key, the output equals the evaluation output.
    model = _axis_model(cross_attend_dropout=1e-9)
    inputs = _tokens(18)
    positions = _document_positions(3)
    evaluation = model(inputs, positions=positions)
    training = model(inputs, positions=positions, dropout_key=jax.random.key(2))
    np.testing.assert_allclose(np.asarray(training), np.asarray(evaluation), atol=1e-5)


def test_sinusoid_model_output_depends_on_offset():
    model = _model(_config(absolute_positions=True))
    inputs = _tokens(19)
    start = model(inputs, positions=_document_positions(1))
    shifted = model(inputs, positions=_document_positions(2))
    assert not np.allclose(np.asarray(start), np.asarray(shifted))


def test_sinusoid_model_requires_positions():
    with pytest.raises(ValueError, match="pass `positions`"):
        _model(_config(absolute_positions=True))(_tokens(20))


def test_sinusoid_model_padding_positions_ignored():
    model = _model(_config(absolute_positions=True))
    inputs = _tokens(21, pad=10)
    positions = _document_positions(-9)
    reference = model(inputs, positions=positions)
    scrambled = model(inputs, positions=positions.at[:, :10].set(33))
    np.testing.assert_array_equal(np.asarray(scrambled), np.asarray(reference))


def test_sinusoids_of_document_index():
    from pact.model import sinusoidal_positions

    waves = np.asarray(sinusoidal_positions(jnp.asarray([0, 3]), 8, 100.0))
    assert waves.shape == (2, 8)
    np.testing.assert_allclose(waves[0], [0, 0, 0, 0, 1, 1, 1, 1], atol=1e-7)
    # The first pair turns once per 2 pi indices; the last at wavelength 100 ** (3 / 4) * 2 pi.
    np.testing.assert_allclose(waves[1, 0], np.sin(3.0), rtol=1e-6)
    np.testing.assert_allclose(waves[1, 3], np.sin(3.0 / 100.0 ** 0.75), rtol=1e-5)
