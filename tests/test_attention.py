"""Attention kernels: one mask rule, three implementations that agree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pact.attention import (
    _block_size,
    attention_mask,
    chunked_attention,
    cudnn_attention,
    resolve_kernel,
    xla_attention,
)


@pytest.fixture(autouse=True)
def highest_precision():
    # Compare kernels at full float32 matmul precision so tolerances reflect the algorithms.
    with jax.default_matmul_precision("highest"):
        yield


def _inputs(seed=0, batch=2, queries=6, keys=41, heads=3, channels=8):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.normal(size=(batch, queries, heads, channels)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(batch, keys, heads, channels)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(batch, keys, heads, channels)), jnp.float32)
    q_positions = jnp.arange(keys - queries, keys)
    k_positions = jnp.arange(keys)
    k_valid = jnp.asarray(rng.random((batch, keys)) > 0.3)
    return q, k, v, q_positions, k_positions, k_valid


def test_mask_worked_example():
    # Three latents at positions 3, 4, 5 over six inputs, input 1 padding.
    valid = jnp.array([[True, False, True, True, True, True]])
    mask = attention_mask(jnp.arange(3, 6), jnp.arange(6), valid)[0, 0]
    expected = np.array([
        [1, 0, 1, 1, 0, 0],
        [1, 0, 1, 1, 1, 0],
        [1, 0, 1, 1, 1, 1],
    ], bool)
    np.testing.assert_array_equal(np.asarray(mask), expected)


def test_mask_keeps_own_position_when_invalid():
    valid = jnp.zeros((1, 4), bool)
    mask = attention_mask(jnp.arange(2, 4), jnp.arange(4), valid)[0, 0]
    np.testing.assert_array_equal(np.asarray(mask), [[0, 0, 1, 0], [0, 0, 0, 1]])


def test_mask_window_limits_distance():
    valid = jnp.ones((1, 6), bool)
    mask = attention_mask(jnp.array([5]), jnp.arange(6), valid, window=3)[0, 0]
    np.testing.assert_array_equal(np.asarray(mask), [[0, 0, 0, 1, 1, 1]])


@pytest.mark.parametrize("window", [None, 9])
@pytest.mark.parametrize("chunk_size", [8, 41, 64])
def test_chunked_matches_dense(window, chunk_size):
    args = _inputs()
    dense = xla_attention(*args, window)
    chunked = chunked_attention(*args, window, chunk_size)
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(dense), atol=2e-6)


@pytest.mark.parametrize("window", [None, 9])
def test_chunked_gradients_match_dense(window):
    q, k, v, q_positions, k_positions, k_valid = _inputs(seed=1)
    weights = jnp.asarray(np.random.default_rng(2).normal(size=q.shape), jnp.float32)

    def gradients(kernel):
        def objective(q, k, v):
            return (kernel(q, k, v) * weights).sum()
        return jax.grad(objective, argnums=(0, 1, 2))(q, k, v)

    dense = gradients(lambda q, k, v: xla_attention(q, k, v, q_positions, k_positions, k_valid, window))
    chunked = gradients(lambda q, k, v: chunked_attention(q, k, v, q_positions, k_positions, k_valid, window, 8))
    for name, a, b in zip("qkv", dense, chunked):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=5e-6, err_msg=f"d{name}")


def test_dot_product_attention_path_matches_dense():
    # jax.nn.dot_product_attention runs cuDNN on GPUs; its XLA implementation checks the mask
    # and scaling we hand it on any machine.
    args = _inputs(seed=3)
    dense = xla_attention(*args, 9)
    library = cudnn_attention(*args, 9, implementation="xla")
    np.testing.assert_allclose(np.asarray(library), np.asarray(dense), atol=2e-6)


def test_bfloat16_inputs_accumulate_in_float32():
    q, k, v, q_positions, k_positions, k_valid = _inputs(seed=4)
    exact = xla_attention(q, k, v, q_positions, k_positions, k_valid)
    low = xla_attention(q.astype(jnp.bfloat16), k.astype(jnp.bfloat16), v.astype(jnp.bfloat16),
                        q_positions, k_positions, k_valid)
    assert low.dtype == jnp.float32
    # bfloat16 keeps 8 bits of mantissa: errors of a few 1e-2 on unit-scale values.
    np.testing.assert_allclose(np.asarray(low), np.asarray(exact), atol=0.06)


def _self_attention_inputs(seed=5, batch=2, length=41, heads=3, channels=8):
    """Queries at every key position, as in a decoder-only model: many query blocks."""
    q, k, v, _, k_positions, k_valid = _inputs(seed, batch, length, length, heads, channels)
    return q, k, v, jnp.arange(length), k_positions, k_valid


@pytest.mark.parametrize("chunk_size", [8, 16])
def test_chunked_query_blocks_match_dense(chunk_size):
    # 41 queries in blocks of at most 8 or 16, the last one padded.
    q, k, v, q_positions, k_positions, k_valid = _self_attention_inputs()
    weights = jnp.asarray(np.random.default_rng(6).normal(size=q.shape), jnp.float32)

    def objective(kernel):
        return lambda q, k, v: (kernel(q, k, v) * weights).sum()

    def dense(q, k, v):
        return xla_attention(q, k, v, q_positions, k_positions, k_valid)

    def chunked(q, k, v):
        return chunked_attention(q, k, v, q_positions, k_positions, k_valid, None, chunk_size)

    np.testing.assert_allclose(np.asarray(chunked(q, k, v)), np.asarray(dense(q, k, v)), atol=2e-6)
    expected = jax.grad(objective(dense), argnums=(0, 1, 2))(q, k, v)
    got = jax.grad(objective(chunked), argnums=(0, 1, 2))(q, k, v)
    for name, a, b in zip("qkv", expected, got):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=5e-6, err_msg=f"d{name}")


def test_per_example_key_positions():
    # Keys in a different random order in each example, as cross-attend dropout leaves them:
    # the same keys at the same positions, permuted, give the output of the ordered keys.
    q, k, v, q_positions, k_positions, k_valid = _inputs(seed=7)
    rng = np.random.default_rng(8)
    order = jnp.asarray(np.stack([rng.permutation(k.shape[1]) for _ in range(k.shape[0])]))  # [B, T]
    shuffled_k = jnp.take_along_axis(k, order[:, :, None, None], axis=1)
    shuffled_v = jnp.take_along_axis(v, order[:, :, None, None], axis=1)
    shuffled_valid = jnp.take_along_axis(k_valid, order, axis=1)
    expected = xla_attention(q, k, v, q_positions, k_positions, k_valid, 9)

    dense = xla_attention(q, shuffled_k, shuffled_v, q_positions, order, shuffled_valid, 9)
    chunked = chunked_attention(q, shuffled_k, shuffled_v, q_positions, order, shuffled_valid, 9, 8)
    np.testing.assert_allclose(np.asarray(dense), np.asarray(expected), atol=2e-6)
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(expected), atol=2e-6)


def test_block_size_splits_evenly():
    assert _block_size(256, 512) == 256
    assert _block_size(1152, 512) == 384  # 3 chunks of 384, no padding
    assert _block_size(2048, 512) == 512
    assert _block_size(41, 8) == 7  # rounding 7 up to 16 would exceed 8


def test_auto_kernel_by_query_count():
    if jax.default_backend() == "gpu":
        pytest.skip("GPUs resolve auto to cuDNN")
    assert resolve_kernel("auto", 1, 2048, 1024) == "xla"  # decoding one token
    assert resolve_kernel("auto", 256, 256, 1024) == "chunked"  # a training step's latents
    assert resolve_kernel("chunked", 1, 2048, 1024) == "chunked"
