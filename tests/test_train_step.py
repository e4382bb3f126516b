"""The loss, the jitted train step and the crop pipeline, on in-memory documents."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pact.config import Config, DataConfig, ModelConfig, TrainConfig
from pact.data import crop_example, training_dataset, with_start
from pact.model import PerceiverAR
from pact.sharding import StepShardings
from pact.train import loss_sums, make_eval_step, make_optimizer, make_train_step

VOCAB = 30


def _config(**train_changes) -> Config:
    train = dataclasses.replace(
        TrainConfig(steps=100, learning_rate=3e-3, warmup_steps=5, z_loss=1e-4), **train_changes
    )
    return Config(
        model=ModelConfig(vocab_size=VOCAB, max_context=48, num_latents=12, num_channels=32, num_heads=2,
                          num_layers=2, dropout=0.0, cross_attend_dropout=0.0),
        data=DataConfig(batch_size=8),
        train=train,
    )


def _documents(count=12, seed=0):
    rng = np.random.default_rng(seed)
    return [{"tokens": np.append(rng.integers(2, VOCAB, size=n), 1).astype(np.int32)}
            for n in rng.integers(3, 120, size=count)]


def _setup(config: Config):
    model = PerceiverAR(config.model, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    # On the step's one-device mesh, as training places them, so that the step compiles once.
    on_mesh = StepShardings.single_device().params
    params = jax.device_put(nnx.to_pure_dict(state), on_mesh)
    optimizer = make_optimizer(config.train)
    return graphdef, params, optimizer, jax.device_put(optimizer.init(params), on_mesh)


def test_loss_sums_match_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 5)).astype(np.float32)
    targets = np.array([[0, 2, 4], [1, 1, 0]], np.int32)  # 0 is padding
    sums = jax.device_get(loss_sums(jnp.asarray(logits), jnp.asarray(targets), z_loss=1e-2))

    log_z = np.log(np.exp(logits).sum(-1))
    mask = targets != 0
    nll = (log_z - np.take_along_axis(logits, targets[..., None], -1)[..., 0])[mask].sum()
    assert float(sums["nll"]) == pytest.approx(nll, rel=1e-5)
    assert float(sums["z_loss"]) == pytest.approx(1e-2 * (log_z[mask] ** 2).sum(), rel=1e-5)
    assert float(sums["count"]) == 4
    correct = (logits.argmax(-1) == targets)[mask].sum()
    assert float(sums["correct"]) == correct


@pytest.mark.parametrize("axes", [None, (4, 4, 3)])
def test_gradient_accumulation_matches_one_batch(axes):
    # With axis embeddings, each micro-batch must keep its rows' positions.
    batch = training_dataset(_documents(), context=48, num_latents=12, batch_size=8, seed=0)[0]
    results = []
    for accum in (1, 4):
        config = _config(grad_accum_steps=accum)
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, position_axes=axes))
        graphdef, params, optimizer, opt_state = _setup(config)
        step = make_train_step(graphdef, optimizer, config)
        params, opt_state, metrics = step(params, opt_state, batch, 0)
        params, opt_state, metrics = step(params, opt_state, batch, 1)
        results.append((jax.tree.leaves(params), jax.device_get(metrics)))
    (params_one, metrics_one), (params_four, metrics_four) = results
    assert metrics_one["loss"] == pytest.approx(metrics_four["loss"], rel=1e-4)
    for a, b in zip(params_one, params_four):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)


def test_tiny_model_overfits_fixed_batch():
    config = _config(learning_rate=1e-2)
    graphdef, params, optimizer, opt_state = _setup(config)
    step = make_train_step(graphdef, optimizer, config)
    batch = training_dataset(_documents(), context=48, num_latents=12, batch_size=8, seed=1)[0]
    first = None
    for index in range(100):
        params, opt_state, metrics = step(params, opt_state, batch, index)
        first = first if first is not None else float(metrics["nll"])
    final = jax.device_get(metrics)
    assert first == pytest.approx(np.log(VOCAB), rel=0.01)  # zero head: uniform predictions
    assert float(final["nll"]) < 0.1
    assert float(final["accuracy"]) > 0.98
    sums = make_eval_step(graphdef, config)(params, batch)
    assert float(sums["nll"] / sums["count"]) < 0.1


def test_sum_reduction_scales_gradients():
    batch = training_dataset(_documents(), context=48, num_latents=12, batch_size=8, seed=2)[0]
    norms = {}
    for reduction in ("mean", "sum"):
        config = _config(loss_reduction=reduction, grad_clip_norm=0.0)
        graphdef, params, optimizer, opt_state = _setup(config)
        _, _, metrics = make_train_step(graphdef, optimizer, config)(params, opt_state, batch, 0)
        norms[reduction] = float(metrics["grad_norm"])
    count = float((np.asarray(batch["targets"])[:, -12:] != 0).sum())
    assert norms["sum"] == pytest.approx(norms["mean"] * count, rel=1e-3)


# Crops.


def test_crop_worked_example():
    tokens = with_start(np.array([5, 6, 7, 1]))  # [EOS 5 6 7 EOS]
    full = crop_example(tokens, end=len(tokens), context=4)
    np.testing.assert_array_equal(full["inputs"], [1, 5, 6, 7])
    np.testing.assert_array_equal(full["targets"], [5, 6, 7, 1])
    np.testing.assert_array_equal(full["positions"], [0, 1, 2, 3])
    first = crop_example(tokens, end=3, context=4)
    np.testing.assert_array_equal(first["inputs"], [0, 0, 1, 5])
    np.testing.assert_array_equal(first["targets"], [0, 0, 5, 6])
    np.testing.assert_array_equal(first["positions"], [-2, -1, 0, 1])


def test_crop_positions_index_the_document():
    # One document, so every crop comes from it: each input is the document's token at its
    # position, and padding columns have negative positions.
    document = _documents(count=1, seed=4)[0]
    sequence = with_start(document["tokens"])
    dataset = training_dataset([document], context=48, num_latents=12, batch_size=4, seed=1)
    for index in range(10):
        batch = dataset[index]
        positions, inputs = batch["positions"], batch["inputs"]
        assert positions.dtype == np.int32
        inside = positions >= 0
        np.testing.assert_array_equal(inputs[inside], sequence[positions[inside]])
        np.testing.assert_array_equal(inputs[~inside], 0)


def test_crops_keep_all_latents_valid():
    dataset = training_dataset(_documents(count=30), context=48, num_latents=12, batch_size=4, seed=3)
    lengths = {len(d["tokens"]) + 1 for d in _documents(count=30)}
    for index in range(40):
        batch = dataset[index]
        assert batch["inputs"].shape == (4, 48)
        targets = batch["targets"][:, -12:]
        for row in range(4):
            valid = int((targets[row] != 0).sum())
            # A document long enough for 12 latents always gets all 12; shorter ones get what they have.
            assert valid == 12 or valid + 1 in lengths
        # Targets are the inputs shifted by one.
        shifted = batch["targets"][:, :-1] != 0
        np.testing.assert_array_equal(batch["inputs"][:, 1:][shifted], batch["targets"][:, :-1][shifted])


def test_crops_deterministic_per_step():
    first = training_dataset(_documents(), context=48, num_latents=12, batch_size=4, seed=5)
    second = training_dataset(_documents(), context=48, num_latents=12, batch_size=4, seed=5)
    other = training_dataset(_documents(), context=48, num_latents=12, batch_size=4, seed=6)
    for index in (0, 7, 31):
        np.testing.assert_array_equal(first[index]["inputs"], second[index]["inputs"])
    assert not np.array_equal(first[0]["inputs"], other[0]["inputs"])


def test_end_crops_end_at_document_end():
    documents = _documents(count=30)
    # [EOS] + tokens has len + 1 ids, and the last input is the one before the final EOS.
    last_input_positions = {len(d["tokens"]) - 1 for d in documents}
    dataset = training_dataset(documents, context=48, num_latents=12, batch_size=4, seed=3, crop="end")
    for index in range(10):
        batch = dataset[index]
        np.testing.assert_array_equal(batch["targets"][:, -1], 1)
        for row in range(4):
            assert int(batch["positions"][row, -1]) in last_input_positions


def test_invalid_crop_rejected():
    from pact.config import DataConfig
    from pact.errors import ConfigError

    with pytest.raises(ConfigError, match="crop"):
        DataConfig(crop="middle")
