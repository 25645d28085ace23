"""Tests for aprec.models.retrieval against brute-force ranking."""

from __future__ import annotations

import numpy as np
import pytest

from aprec.models import retrieval


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
