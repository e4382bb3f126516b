"""The analytic FLOP formula against XLA's cost analysis of the compiled train step.

XLA's count covers every operation, so it exceeds the matmul FLOPs by the elementwise work
(normalisations, softmax, dropout, the optimizer update): 2-3% at these sizes. The checks use
the dense attention kernel because XLA counts the body of a while loop once, whatever its trip
count, which would hide most of the chunked kernel's work.
"""

import dataclasses
import functools

import jax.numpy as jnp
import pytest
from flax import nnx

from pact.baseline import DecoderOnly
from pact.config import Config, DataConfig, ModelConfig, TrainConfig
from pact.flops import cross_attention_keys, decoder_only_step_flops, perceiver_ar_step_flops
from pact.model import PerceiverAR
from pact.train import make_optimizer, make_train_step

BATCH = 8
# Analytic matmul FLOPs over XLA's FLOPs of the whole step. The head and the attention are each
# about 5% of the step, so a missing or doubled term falls outside.
MIN_SHARE, MAX_SHARE = 0.95, 1.0

MODEL = ModelConfig(
    vocab_size=388, max_context=256, num_latents=64, num_channels=256, num_heads=4, num_layers=1,
    dropout=0.1, cross_attend_dropout=0.5, attention="xla",
)


@functools.cache
def _xla_flops(model_class, config: ModelConfig) -> float:
    """XLA's FLOP count of one compiled train step of `model_class` on [BATCH, max_context]."""
    run_config = Config(model=config, data=DataConfig(batch_size=BATCH), train=TrainConfig(steps=10))
    graphdef, state = nnx.split(model_class(config, rngs=nnx.Rngs(0)))
    params = nnx.to_pure_dict(state)
    optimizer = make_optimizer(run_config.train)
    step = make_train_step(graphdef, optimizer, run_config)
    batch = {name: jnp.ones((BATCH, config.max_context), jnp.int32) for name in ("inputs", "targets")}
    costs = step.lower(params, optimizer.init(params), batch, 0).compile().cost_analysis()
    costs = costs[0] if isinstance(costs, list) else costs
    return float(costs["flops"])


def test_cross_attention_keys_keep_latents():
    assert cross_attention_keys(2048, 256, 0.0) == 2048
    assert cross_attention_keys(2048, 256, 0.5) == 256 + 896
    assert cross_attention_keys(32, 8, 0.999999) == 8


def test_perceiver_ar_flops_match_xla():
    analytic = perceiver_ar_step_flops(MODEL, BATCH, chunked=False).executed
    share = analytic / _xla_flops(PerceiverAR, MODEL)
    assert MIN_SHARE <= share <= MAX_SHARE


def test_decoder_only_flops_match_xla():
    config = dataclasses.replace(MODEL, num_latents=MODEL.max_context)
    analytic = decoder_only_step_flops(config, BATCH, chunked=False).executed
    share = analytic / _xla_flops(DecoderOnly, config)
    assert MIN_SHARE <= share <= MAX_SHARE


def test_perceiver_ar_flops_difference_match_xla():
    # The FLOPs added by one more layer and a longer context isolate the per-layer and
    # cross-attention terms from the fixed ones.
    changed = dataclasses.replace(MODEL, num_layers=2, max_context=512)
    analytic = (perceiver_ar_step_flops(changed, BATCH, chunked=False).executed
                - perceiver_ar_step_flops(MODEL, BATCH, chunked=False).executed)
    xla = _xla_flops(PerceiverAR, changed) - _xla_flops(PerceiverAR, MODEL)
    assert MIN_SHARE <= analytic / xla <= MAX_SHARE


def test_chunked_recompute_is_half_the_forward_logits():
    flops = perceiver_ar_step_flops(MODEL, BATCH, chunked=True)
    dense = perceiver_ar_step_flops(MODEL, BATCH, chunked=False)
    assert flops.model == dense.model
    # QK^T is half of the forward attention products, which are a third of the step's.
    assert flops.attention_recompute == pytest.approx(flops.attention / 6)
