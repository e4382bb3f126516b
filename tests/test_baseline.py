"""The decoder-only baseline: causal at every position, trains with the shared train step."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pact.baseline import DecoderOnly
from pact.config import Config, DataConfig, ModelConfig, TrainConfig
from pact.data import training_dataset
from pact.model import PAD_ID
from pact.train import make_eval_step, make_optimizer, make_train_step

VOCAB = 30
CONTEXT = 24


def _config(**changes) -> ModelConfig:
    base = ModelConfig(
        vocab_size=VOCAB, max_context=CONTEXT, num_latents=CONTEXT, num_channels=32, num_heads=2,
        num_layers=2, dropout=0.0, cross_attend_dropout=0.0, compute_dtype="float32",
    )
    return dataclasses.replace(base, **changes)


def _model(config: ModelConfig, seed: int = 0) -> DecoderOnly:
    model = DecoderOnly(config, rngs=nnx.Rngs(seed))
    # The head starts at zero (uniform predictions); random weights make every position matter.
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


@pytest.mark.parametrize("kernel", ["xla", "chunked"])
@pytest.mark.parametrize("pad", [0, 9])
def test_position_ignores_future_tokens(kernel, pad):
    model = _model(_config(attention=kernel, attention_chunk_size=8))
    forward = nnx.jit(lambda model, x: model(x))
    inputs = _tokens(0, pad=pad)
    reference = forward(model, inputs)
    for position in range(pad, CONTEXT - 1):
        changed = inputs.at[:, position + 1:].set(_tokens(position + 1, length=CONTEXT - position - 1))
        logits = forward(model, changed)
        np.testing.assert_array_equal(
            np.asarray(logits[:, :position + 1]), np.asarray(reference[:, :position + 1]),
            err_msg=f"position {position} saw a later token",
        )
        assert not np.allclose(np.asarray(logits[:, position + 1:]), np.asarray(reference[:, position + 1:]))


def test_output_positions_are_the_last_ones():
    model = _model(_config())
    inputs = _tokens(1)
    full = model(inputs)
    assert full.shape == (2, CONTEXT, VOCAB)
    last = model(inputs, num_latents=5)
    assert last.shape == (2, 5, VOCAB)
    np.testing.assert_allclose(np.asarray(last), np.asarray(full[:, -5:]), atol=1e-6)


def test_head_starts_at_zero():
    model = DecoderOnly(_config(), rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(np.asarray(model(_tokens(2))), 0.0)


def test_baseline_overfits_fixed_batch():
    # The shared train step trains the baseline when every position is a "latent".
    model_config = _config(compute_dtype="bfloat16", max_context=48, num_latents=48)
    config = Config(model=model_config, data=DataConfig(batch_size=8),
                    train=TrainConfig(steps=100, learning_rate=1e-2, warmup_steps=5))
    rng = np.random.default_rng(0)
    documents = [{"tokens": np.append(rng.integers(2, VOCAB, size=n), 1).astype(np.int32)}
                 for n in rng.integers(20, 120, size=12)]
    batch = training_dataset(documents, context=48, num_latents=48, batch_size=8, seed=1)[0]

    model = DecoderOnly(model_config, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    optimizer = make_optimizer(config.train)
    opt_state = optimizer.init(params)
    step = make_train_step(graphdef, optimizer, config)
    first = None
    for index in range(100):
        params, opt_state, metrics = step(params, opt_state, batch, index)
        first = first if first is not None else float(metrics["nll"])
    final = jax.device_get(metrics)

    assert first == pytest.approx(np.log(VOCAB), rel=0.01)  # zero head: uniform predictions
    assert float(final["targets"]) == float((np.asarray(batch["targets"]) != PAD_ID).sum())
    assert float(final["nll"]) < 0.1
    sums = make_eval_step(graphdef, config)(params, batch)
    assert float(sums["nll"] / sums["count"]) < 0.1
