"""Benchmark metrics: known answers for each modality, and strided scoring of whole documents."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pact.benchmark_metrics import BitsPerByte, BitsPerDimension, CopyAccuracy, DocumentScores, metrics_for
from pact.config import ModelConfig
from pact.encodings import EOS_ID, get_tokenizer
from pact.encodings.copy_task import CopyExample
from pact.evaluate import evaluate_source
from pact.model import PerceiverAR


def test_bits_per_byte_counts_utf8_bytes():
    tokenizer = get_tokenizer("bytes")
    tokens = np.append(tokenizer.encode("héllo"), EOS_ID)  # 6 bytes and EOS
    nll = np.array([1.0, 2.0, 0.5, 0.5, 1.0, 1.0, 3.0])
    metric = BitsPerByte(tokenizer)
    metric.add(tokens, nll, np.zeros(7, bool))
    result = metric.result()
    assert result["bytes"] == 6
    assert result["bits_per_byte"] == pytest.approx(9.0 / math.log(2) / 6)
    assert result["bytes_per_token"] == pytest.approx(6 / 7)


def test_bits_per_dimension_leaves_out_eos():
    metric = BitsPerDimension()
    metric.add(np.array([5, 6, 7, EOS_ID]), np.array([1.0, 2.0, 3.0, 100.0]), np.zeros(4, bool))
    metric.add(np.array([9, EOS_ID]), np.array([0.0, 50.0]), np.zeros(2, bool))
    assert metric.result() == {"bits_per_dim": pytest.approx(6.0 / math.log(2) / 4), "dimensions": 4}


def test_copy_accuracy_scores_only_the_mirrored_half():
    tokenizer = get_tokenizer("copy", vocab_size=8)
    tokens = np.append(tokenizer.encode(CopyExample.mirrored([0, 1, 2])), EOS_ID)  # [3 4 5 SEP 5 4 3 EOS]
    metric = CopyAccuracy(tokenizer)
    # First half wrong everywhere, mirrored half right: an exact sequence.
    metric.add(tokens, np.full(8, 0.5), np.array([0, 0, 0, 0, 1, 1, 1, 0], bool))
    # One mirrored token wrong: not exact.
    metric.add(tokens, np.full(8, 1.0), np.array([1, 1, 1, 1, 1, 0, 1, 1], bool))
    result = metric.result()
    assert result["copy_token_accuracy"] == pytest.approx(5 / 6)
    assert result["copy_sequence_accuracy"] == pytest.approx(0.5)
    assert result["copy_tokens"] == 6
    assert result["copy_sequences"] == 2
    assert result["copy_nll"] == pytest.approx((3 * 0.5 + 3 * 1.0) / 6)


def test_metrics_follow_the_modality():
    assert [type(m).__name__ for m in metrics_for(get_tokenizer("bytes"))] == ["BitsPerByte"]
    assert [type(m).__name__ for m in metrics_for(get_tokenizer("image"))] == ["BitsPerDimension"]
    assert [type(m).__name__ for m in metrics_for(get_tokenizer("copy"))] == ["CopyAccuracy"]
    assert metrics_for(get_tokenizer("performance")) == []
    assert metrics_for(None) == []


def test_document_scores_complete_documents_in_any_order():
    source = [{"tokens": np.array([5, 6, EOS_ID])}, {"tokens": np.array([7, EOS_ID])}]
    metric = BitsPerDimension()
    scores = DocumentScores(source, [metric])
    scores.add(np.array([0, 1]), np.array([3, 2]), np.array([9.0, 4.0]), np.array([True, False]))
    scores.add(np.array([1, 0]), np.array([1, 1]), np.array([2.0, 1.0]), np.array([True, True]))
    with pytest.raises(ValueError, match=r"documents \[0\] were not scored completely"):
        scores.result()
    scores.add(np.array([0]), np.array([2]), np.array([3.0]), np.array([True]))
    assert scores.result() == {"bits_per_dim": pytest.approx(6.0 / math.log(2) / 3), "dimensions": 3}


# Strided scoring with a real model whose parameters are random, so that every target's
# prediction depends on its context.


class _Documents:
    """A list of documents with the random access of a dataset split."""

    def __init__(self, documents):
        self.documents = [np.asarray(tokens, np.int32) for tokens in documents]

    def __len__(self):
        return len(self.documents)

    def __getitem__(self, index):
        return {"tokens": self.documents[index]}


@pytest.fixture(scope="module")
def random_model():
    config = ModelConfig(vocab_size=258, max_context=64, num_latents=16, num_channels=32, num_heads=2,
                         num_layers=1, dropout=0.0, cross_attend_dropout=0.0, compute_dtype="float32")
    model = PerceiverAR(config, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    leaves, treedef = jax.tree.flatten(state)
    # NumPy draws the noise, because each eager JAX op would be compiled on its own.
    rng = np.random.default_rng(1)
    leaves = [jnp.asarray(np.asarray(leaf) + 0.3 * rng.standard_normal(leaf.shape), leaf.dtype) for leaf in leaves]
    return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))


def _direct_nll(model, documents: list[np.ndarray]) -> float:
    """Summed NLL of documents that fit in one forward pass each: all targets on the last latents."""
    context, latents = model.config.max_context, model.config.num_latents
    graphdef, params = nnx.split(model)
    forward = jax.jit(lambda params, inputs: nnx.merge(graphdef, params)(inputs, num_latents=latents))
    total = 0.0
    for tokens in documents:
        sequence = np.concatenate([[EOS_ID], tokens]).astype(np.int32)
        inputs = np.zeros((1, context), np.int32)
        inputs[0, context - len(sequence) + 1:] = sequence[:-1]
        logits = np.asarray(forward(params, inputs), np.float64)[0, latents - (len(sequence) - 1):]
        targets = sequence[1:]
        log_normaliser = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        total += float(np.sum(log_normaliser - logits[np.arange(len(targets)), targets]))
    return total


def test_strided_scores_match_one_direct_pass(random_model, pg19_mini):
    # Documents of 15 bytes + EOS: 16 targets, exactly the 16 latents of one forward pass.
    tokenizer = get_tokenizer("bytes")
    text = tokenizer.read(pg19_mini / "test" / "84.txt")
    documents = _Documents([np.append(tokenizer.encode(text[i * 15:i * 15 + 15]), EOS_ID) for i in range(5)])
    result = evaluate_source(random_model, documents, split="test", batch_size=2, tokenizer=tokenizer)
    expected = _direct_nll(random_model, [documents[i]["tokens"] for i in range(len(documents))])
    assert result.targets == 5 * 16
    assert result.nll * result.targets == pytest.approx(expected, rel=1e-5)
    assert result.nll != pytest.approx(math.log(258), rel=1e-2)


def test_batch_size_and_order_do_not_change_scores(random_model, pg19_mini):
    tokenizer = get_tokenizer("bytes")
    text = tokenizer.read(pg19_mini / "test" / "84.txt")
    documents = [np.append(tokenizer.encode(text[i * 97:i * 97 + 50 + 20 * i]), EOS_ID) for i in range(4)]
    first = evaluate_source(random_model, _Documents(documents), split="test", batch_size=3, tokenizer=tokenizer)
    second = evaluate_source(random_model, _Documents(documents[::-1]), split="test", batch_size=5,
                             tokenizer=tokenizer)
    assert first.targets == second.targets == sum(len(tokens) for tokens in documents)
    assert first.nll == pytest.approx(second.nll, rel=1e-6)
    assert first.to_dict()["bits_per_byte"] == pytest.approx(second.to_dict()["bits_per_byte"], rel=1e-6)


def test_modality_metrics_agree_with_the_nll(random_model, pg19_mini):
    tokenizer = get_tokenizer("bytes")
    text = tokenizer.read(pg19_mini / "validation" / "2641.txt")
    documents = _Documents([np.append(tokenizer.encode(text[:300]), EOS_ID),
                            np.append(tokenizer.encode(text[5000:5100]), EOS_ID)])
    result = evaluate_source(random_model, documents, split="validation", batch_size=8, tokenizer=tokenizer)
    values = result.to_dict()
    total_bits = result.nll * result.targets / math.log(2)
    assert values["bytes"] == len(text[:300].encode()) + len(text[5000:5100].encode())
    assert values["bits_per_byte"] == pytest.approx(total_bits / values["bytes"], rel=1e-6)
    assert values["token_unit"] == "byte"
    assert sum(bucket["targets"] for bucket in values["buckets"]) == result.targets
    assert values["buckets"][0]["bits"] == pytest.approx(values["buckets"][0]["nll"] / math.log(2))
    assert 0.0 <= values["buckets"][0]["accuracy"] <= 1.0
