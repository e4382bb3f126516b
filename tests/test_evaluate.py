"""Strided evaluation windows and their document positions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pact.config import ModelConfig
from pact.data import with_start
from pact.evaluate import block_ranges, document_windows, evaluate_source
from pact.model import PerceiverAR

VOCAB = 30


@pytest.fixture(autouse=True)
def highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


@pytest.mark.parametrize("block_size", [1, 3, 8])
def test_window_input_positions_index_the_document(block_size):
    tokens = np.random.default_rng(0).integers(2, VOCAB, size=40).astype(np.int32)
    sequence = with_start(tokens)
    for window in document_windows(tokens, context=16, block_size=block_size):
        inside = window.input_positions >= 0
        np.testing.assert_array_equal(window.inputs[inside], sequence[window.input_positions[inside]])
        np.testing.assert_array_equal(window.inputs[~inside], 0)
        # Each scored target follows the input in its column.
        scored = window.positions >= 0
        np.testing.assert_array_equal(window.positions[scored], window.input_positions[scored] + 1)


@pytest.mark.parametrize("align", ["start", "end"])
@pytest.mark.parametrize("length, block_size", [(41, 8), (41, 10), (5, 8), (2, 1)])
def test_blocks_score_every_target_once(length, block_size, align):
    ranges = block_ranges(length, block_size, align)
    scored = [index for first, last in ranges for index in range(first, last + 1)]
    assert scored == list(range(1, length))
    sizes = [last - first + 1 for first, last in ranges]
    assert max(sizes) <= block_size
    # Only the block farthest from the alignment may be short.
    full = sizes[:-1] if align == "start" else sizes[1:]
    assert all(size == block_size for size in full)


def test_end_alignment_ends_at_document_end():
    tokens = np.arange(2, 43, dtype=np.int32)  # 41 tokens: targets 1 .. 41 after the leading EOS
    windows = list(document_windows(tokens, context=16, block_size=8, align="end"))
    assert [int(w.positions[w.positions >= 0][0]) for w in windows] == [1, 2, 10, 18, 26, 34]
    assert windows[-1].positions[-1] == 41


def test_axis_model_scores_match_direct_forward():
    # A document shorter than the latents is scored by one window. The test builds that
    # window's positions itself: with `pad` padding columns, column c contains index c - pad.
    config = ModelConfig(
        vocab_size=VOCAB, max_context=24, num_latents=12, num_channels=32, num_heads=2, num_layers=1,
        dropout=0.0, cross_attend_dropout=0.0, compute_dtype="float32", position_axes=(2, 2, 3),
    )
    model = PerceiverAR(config, rngs=nnx.Rngs(0))
    model.head.kernel[...] = jax.random.normal(jax.random.key(1), model.head.kernel[...].shape)
    for index, table in enumerate(model.axis_embedding.tables):
        table.embedding[...] = jax.random.normal(jax.random.key(5 + index), table.embedding[...].shape)
    tokens = np.append(np.random.default_rng(1).integers(2, VOCAB, size=9), 1).astype(np.int32)
    sequence = with_start(tokens)

    result = evaluate_source(model, [{"tokens": tokens}], split="validation", batch_size=2)

    pad = 24 - (len(sequence) - 1)
    inputs = np.zeros((1, 24), np.int32)
    inputs[0, pad:] = sequence[:-1]
    positions = jnp.arange(24)[None, :] - pad
    logits = model(jnp.asarray(inputs), positions=positions, num_latents=12)[0, -len(tokens):]
    log_probabilities = jax.nn.log_softmax(logits, axis=-1)
    expected = -float(jnp.take_along_axis(log_probabilities, jnp.asarray(tokens)[:, None], axis=-1).mean())
    assert result.targets == len(tokens)
    assert result.nll == pytest.approx(expected, rel=1e-5)
    shifted = model(jnp.asarray(inputs), positions=positions + 1, num_latents=12)[0, -len(tokens):]
    assert not np.allclose(np.asarray(shifted), np.asarray(logits), atol=1e-3)
