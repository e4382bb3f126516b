"""Matrix products for bfloat16 training: bfloat16 operands and float32 accumulation in both passes.

`jax.lax.dot_general(x, w, preferred_element_type=float32)` with bfloat16 operands runs the
forward product at bfloat16 speed, but autodiff's backward pass does not: the cotangent of a
float32 output is float32, so both transposed products promote their operands to float32. On
CPUs with AVX512_BF16 those float32 products run 2-3x slower than bfloat16 ones (a 4096^3
product on 2 AVX-512 cores: about 85 against 255 GFLOP/s), and the backward pass does two
thirds of a training step's matmul FLOPs.

`dot_general` computes the same forward product. In the backward pass it rounds the cotangent
to the operands' dtype before the two transposed products, which again accumulate in float32
and are then rounded to the operands' dtype. This is the usual mixed-precision convention:
activation gradients travel in bfloat16 and every sum accumulates in float32. With float32
operands nothing is rounded and the gradients equal those of `jax.lax.dot_general`.

NOTE: the custom VJP supports reverse-mode differentiation only; `jax.jvp` or `jax.hessian`
through these products raises a TypeError.

Every product is issued in canonical form, [batch..., M, K] @ [batch..., K, N], with explicit
transposes where needed. XLA's CPU backend (jaxlib 0.10) runs bfloat16 x bfloat16 -> float32
products only in that form; others fail at run time with "Unsupported element type for
DotThunk::Execute".
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def _free_axes(ndim: int, contracting, batch) -> tuple[int, ...]:
    """Axes of an operand that are neither contracted nor batched, in order."""
    used = set(contracting) | set(batch)
    return tuple(axis for axis in range(ndim) if axis not in used)


def _canonical_product(a, a_batch, a_free, a_contracting, b, b_batch, b_contracting, b_free,
                       *, precision, accumulation):
    """Sum over the paired contracting axes of a and b: [batch..., a_free..., b_free...].

    Axes are listed in the order the result (batch, free) or the pairing (contracting) needs.
    Both operands are transposed and reshaped to [batch..., M, K] and [batch..., K, N] first.
    """
    batch_shape = tuple(a.shape[axis] for axis in a_batch)
    a_free_shape = tuple(a.shape[axis] for axis in a_free)
    b_free_shape = tuple(b.shape[axis] for axis in b_free)
    depth = math.prod(a.shape[axis] for axis in a_contracting)

    a = jnp.transpose(a, (*a_batch, *a_free, *a_contracting))
    a = a.reshape(*batch_shape, math.prod(a_free_shape), depth)  # [batch..., M, K]
    b = jnp.transpose(b, (*b_batch, *b_contracting, *b_free))
    b = b.reshape(*batch_shape, depth, math.prod(b_free_shape))  # [batch..., K, N]

    num_batch = len(batch_shape)
    batch_axes = tuple(range(num_batch))
    out = lax.dot_general(
        a, b, (((num_batch + 1,), (num_batch,)), (batch_axes, batch_axes)),
        precision=precision, preferred_element_type=accumulation,
    )
    return out.reshape(*batch_shape, *a_free_shape, *b_free_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type):
    (lhs_contracting, rhs_contracting), (lhs_batch, rhs_batch) = dimension_numbers
    return _canonical_product(
        lhs, lhs_batch, _free_axes(lhs.ndim, lhs_contracting, lhs_batch), lhs_contracting,
        rhs, rhs_batch, rhs_contracting, _free_axes(rhs.ndim, rhs_contracting, rhs_batch),
        precision=precision, accumulation=preferred_element_type,
    )


def _dot_general_forward(lhs, rhs, dimension_numbers, precision, preferred_element_type):
    out = _dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type)
    return out, (lhs, rhs)


def _dot_general_backward(dimension_numbers, precision, preferred_element_type, residuals, cotangent):
    lhs, rhs = residuals
    (lhs_contracting, rhs_contracting), (lhs_batch, rhs_batch) = dimension_numbers
    lhs_free = _free_axes(lhs.ndim, lhs_contracting, lhs_batch)
    rhs_free = _free_axes(rhs.ndim, rhs_contracting, rhs_batch)
    operand_dtype = jnp.result_type(lhs, rhs)
    accumulation = jnp.promote_types(operand_dtype, jnp.float32)
    cotangent = cotangent.astype(operand_dtype)

    # The cotangent's axes: batch, then the free axes of lhs, then those of rhs.
    num_batch = len(lhs_batch)
    cotangent_batch = tuple(range(num_batch))
    cotangent_lhs_free = tuple(range(num_batch, num_batch + len(lhs_free)))
    cotangent_rhs_free = tuple(range(num_batch + len(lhs_free), cotangent.ndim))

    # d lhs = cotangent contracted with rhs over rhs's free axes: [batch, lhs free, lhs contracting].
    lhs_gradient = _canonical_product(
        cotangent, cotangent_batch, cotangent_lhs_free, cotangent_rhs_free,
        rhs, rhs_batch, rhs_free, rhs_contracting,
        precision=precision, accumulation=accumulation,
    )
    lhs_gradient = jnp.transpose(lhs_gradient, np.argsort((*lhs_batch, *lhs_free, *lhs_contracting)))

    # d rhs = lhs contracted with the cotangent over lhs's free axes: [batch, rhs contracting, rhs free].
    rhs_gradient = _canonical_product(
        lhs, lhs_batch, lhs_contracting, lhs_free,
        cotangent, cotangent_batch, cotangent_lhs_free, cotangent_rhs_free,
        precision=precision, accumulation=accumulation,
    )
    rhs_gradient = jnp.transpose(rhs_gradient, np.argsort((*rhs_batch, *rhs_contracting, *rhs_free)))
    return lhs_gradient.astype(lhs.dtype), rhs_gradient.astype(rhs.dtype)


_dot_general.defvjp(_dot_general_forward, _dot_general_backward)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
                out_sharding=None):
    """`jax.lax.dot_general` whose backward products keep the operands' dtype.

    A drop-in for the `dot_general` argument of `flax.nnx.Linear` and the `_dot_general`
    argument of `jax.numpy.einsum`. `out_sharding` must be None because pact runs on one device.
    """
    if out_sharding is not None:
        raise NotImplementedError("pact.precision.dot_general does not support out_sharding")
    dimension_numbers = tuple(
        tuple(tuple(int(axis) for axis in axes) for axes in side) for side in dimension_numbers
    )
    return _dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type)


def einsum(subscripts: str, *operands, preferred_element_type=None):
    """`jax.numpy.einsum` built on `dot_general` above, so its gradient keeps bfloat16 products."""
    return jnp.einsum(subscripts, *operands, preferred_element_type=preferred_element_type,
                      _dot_general=dot_general)
