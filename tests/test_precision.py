"""Mixed-precision dot_general: exact float32 gradients, bfloat16 products in the backward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from pact.precision import dot_general, einsum

# (lhs shape, rhs shape, dimension numbers): a linear layer, attention logits and weighted
# values, two contracting axes in another order, and a batch axis that is not leading in rhs.
CASES = [
    ((3, 5, 7), (7, 4), (((2,), (0,)), ((), ()))),
    ((2, 6, 3, 8), (2, 9, 3, 8), (((3,), (3,)), ((0, 2), (0, 2)))),
    ((2, 3, 6, 9), (2, 9, 3, 8), (((3,), (1,)), ((0, 1), (0, 2)))),
    ((4, 5, 6), (6, 5, 3), (((1, 2), (1, 0)), ((), ()))),
    ((2, 4, 5), (5, 2, 7), (((2,), (0,)), ((0,), (1,)))),
]


@pytest.fixture(autouse=True)
def highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


@pytest.mark.parametrize("lhs_shape, rhs_shape, dimension_numbers", CASES)
def test_float32_matches_lax_dot_general(lhs_shape, rhs_shape, dimension_numbers):
    rng = np.random.default_rng(0)
    lhs = jnp.asarray(rng.normal(size=lhs_shape), jnp.float32)
    rhs = jnp.asarray(rng.normal(size=rhs_shape), jnp.float32)
    expected = lax.dot_general(lhs, rhs, dimension_numbers)
    weights = jnp.asarray(rng.normal(size=expected.shape), jnp.float32)

    def objective(product):
        return lambda a, b: (product(a, b, dimension_numbers) * weights).sum()

    np.testing.assert_allclose(np.asarray(dot_general(lhs, rhs, dimension_numbers)), np.asarray(expected),
                               rtol=1e-6, atol=1e-6)
    reference = jax.grad(objective(lax.dot_general), argnums=(0, 1))(lhs, rhs)
    gradients = jax.grad(objective(dot_general), argnums=(0, 1))(lhs, rhs)
    for name, got, want in zip(("lhs", "rhs"), gradients, reference):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5, err_msg=name)


def _product_operand_dtypes(function, *args) -> list[tuple[str, str]]:
    """Operand dtypes of every dot_general in the jaxpr of `function`, nested calls included."""
    dtypes = []

    def visit(jaxpr):
        for equation in jaxpr.eqns:
            if equation.primitive.name == "dot_general":
                dtypes.append(tuple(str(var.aval.dtype) for var in equation.invars))
            for value in equation.params.values():
                for inner in value if isinstance(value, (list, tuple)) else [value]:
                    if hasattr(inner, "jaxpr"):
                        visit(inner.jaxpr if hasattr(inner.jaxpr, "eqns") else inner.jaxpr.jaxpr)
                    elif hasattr(inner, "eqns"):
                        visit(inner)

    visit(jax.make_jaxpr(function)(*args).jaxpr)
    return dtypes


def test_backward_products_take_bfloat16_operands():
    lhs = jnp.ones((4, 8, 16), jnp.bfloat16)
    rhs = jnp.ones((16, 32), jnp.bfloat16)

    def objective(product):
        def loss(a, b):
            out = product(a, b, (((2,), (0,)), ((), ())), preferred_element_type=jnp.float32)
            return jnp.square(out).sum()  # a float32 cotangent reaches the product
        return loss

    dtypes = _product_operand_dtypes(jax.grad(objective(dot_general), argnums=(0, 1)), lhs, rhs)
    assert len(dtypes) == 3  # forward, d lhs, d rhs
    assert all(pair == ("bfloat16", "bfloat16") for pair in dtypes), dtypes
    # Plain autodiff feeds the float32 cotangent to the transposed products.
    plain = _product_operand_dtypes(jax.grad(objective(lax.dot_general), argnums=(0, 1)), lhs, rhs)
    assert any("float32" in pair for pair in plain), plain


def test_bfloat16_gradients_close_to_float32():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(2, 6, 3, 8))
    k = rng.normal(size=(2, 9, 3, 8))

    def gradients(dtype):
        def loss(a, b):
            logits = einsum("bqhk,bthk->bhqt", a, b, preferred_element_type=jnp.float32)
            return jnp.sin(logits).sum()
        return jax.grad(loss, argnums=(0, 1))(jnp.asarray(q, dtype), jnp.asarray(k, dtype))

    for exact, low in zip(gradients(jnp.float32), gradients(jnp.bfloat16)):
        assert low.dtype == jnp.bfloat16
        scale = float(jnp.abs(exact).max())
        assert float(jnp.abs(low.astype(jnp.float32) - exact).max()) < 0.05 * scale
