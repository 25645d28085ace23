"""Tests for RetrievalEvaluator on a toy embedder (MiniLM's own compile is too slow for tests;
scripts/minilm_uniform_table.py runs it on the real model)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aprec.emulator import retrieval_scoring as retrieval
from aprec.emulator.retrieval_scoring import RetrievalEvaluator
from aprec.models import docstrings


def embed(w, inputs):
  ids, mask = inputs
  h = jnp.tanh(jnp.take(w["table"], ids, axis=0) @ w["proj"]) @ w["out"]
  m = mask[..., None].astype(h.dtype)
  pooled = (h * m).sum(-2) / m.sum(-2)
  return pooled / jnp.linalg.norm(pooled, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def weights():
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  return {
      "table": jax.random.normal(k1, (30522, 16)),
      "proj": jax.random.normal(k2, (16, 32)),
      "out": jax.random.normal(k3, (32, 16)),
  }


@pytest.fixture(scope="module")
def evaluator(weights) -> RetrievalEvaluator:
  few = docstrings.make_split(docstrings.load_pairs()[:5])  # 10 texts: padded to 12 rows
  return RetrievalEvaluator(embed, weights, few, batch_rows=4)


def test_fp32_is_the_plain_model(evaluator, weights):
  plain = np.asarray(embed(weights, evaluator.split.x))
  got = evaluator.embeddings(evaluator.emulator.assignment("fp32"))
  np.testing.assert_allclose(got, plain, atol=1e-6)
  r = evaluator.measure(evaluator.emulator.assignment("fp32"))
  assert r.mean_cosine == pytest.approx(1.0, abs=1e-12)
  assert r[:3] == tuple(retrieval.retrieval_metrics(plain, 5))


def test_mean_cosine_is_float64_numpy_of_the_embeddings(evaluator):
  modes = evaluator.emulator.assignment("int4")
  e = evaluator.embeddings(modes).astype(np.float64)
  ref = evaluator.reference().astype(np.float64)
  expected = np.mean([a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(e, ref)])
  r = evaluator.measure(modes)
  assert r.mean_cosine == pytest.approx(expected, abs=1e-12)
  assert r.mean_cosine < evaluator.measure(evaluator.emulator.assignment("bf16")).mean_cosine


def test_bad_batch_rows(evaluator):
  with pytest.raises(ValueError, match="batch_rows"):
    RetrievalEvaluator(embed, None, evaluator.split, batch_rows=0)


def test_ranks_match_brute_force_sorting():
  rng = np.random.default_rng(0)
  q, d = rng.normal(size=(30, 5)), rng.normal(size=(30, 5))
  got = retrieval.ranks(q, d)
  cos = lambda a, b: a @ b / np.linalg.norm(a) / np.linalg.norm(b)
  for i in range(30):
    order = sorted(range(30), key=lambda j: -cos(q[i], d[j]))
    assert got[i] == order.index(i) + 1
  m = retrieval.metrics_from_ranks(got)
  assert m.recall_at_1 == pytest.approx(np.mean(got == 1))
  assert m.recall_at_10 == pytest.approx(np.mean(got <= 10))
  assert m.mrr == pytest.approx(np.mean([1 / r for r in got]))


def test_retrieval_metrics_split_queries_and_documents():
  e = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])  # each query's doc is swapped
  m = retrieval.retrieval_metrics(e, 2)
  assert m == retrieval.RetrievalMetrics(recall_at_1=0.0, recall_at_10=1.0, mrr=0.5)
  with pytest.raises(ValueError, match="2 \\* 3"):
    retrieval.retrieval_metrics(e, 3)
