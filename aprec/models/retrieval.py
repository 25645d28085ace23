"""Retrieval metrics of sentence embeddings: recall@k and mean reciprocal rank.

Queries and documents are unit vectors; each query's document is the one at the same index.
A document's rank is 1 + the number of documents scored strictly higher than the true one
(ties count in the query's favour), so the metrics are exact functions of the embeddings.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class RetrievalMetrics(NamedTuple):
  """Recall@1, recall@10 and mean reciprocal rank, as fractions in ``[0, 1]``."""

  recall_at_1: float
  recall_at_10: float
  mrr: float


def ranks(queries: np.ndarray, documents: np.ndarray) -> np.ndarray:
  """Rank (1 = best) of document ``i`` for query ``i`` by cosine similarity, float64.

  Example:
    >>> q = np.array([[1.0, 0.0], [0.0, 1.0]]); d = np.array([[0.6, 0.8], [0.0, 1.0]])
    >>> ranks(q, d).tolist()
    [1, 1]
  """
  q = np.asarray(queries, np.float64)
  d = np.asarray(documents, np.float64)
  if q.ndim != 2 or q.shape != d.shape:
    raise ValueError(f"queries {q.shape} and documents {d.shape} must be matching (n, dim) arrays")
  q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
  d = d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-12)
  scores = q @ d.T
  true = np.diagonal(scores)
  return 1 + np.sum(scores > true[:, None], axis=1)


def metrics_from_ranks(rank: np.ndarray) -> RetrievalMetrics:
  """Recall@1, recall@10 and MRR of an array of ranks."""
  rank = np.asarray(rank)
  if rank.size == 0:
    raise ValueError("no queries to score")
  return RetrievalMetrics(recall_at_1=float(np.mean(rank <= 1)),
                          recall_at_10=float(np.mean(rank <= 10)),
                          mrr=float(np.mean(1.0 / rank)))


def retrieval_metrics(embeddings: np.ndarray, num_pairs: int) -> RetrievalMetrics:
  """Metrics of a split's embeddings: rows ``[0, n)`` are queries, ``[n, 2n)`` their documents.

  Example:
    >>> e = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.2, 0.8]])
    >>> retrieval_metrics(e, 2)
    RetrievalMetrics(recall_at_1=1.0, recall_at_10=1.0, mrr=1.0)
  """
  e = np.asarray(embeddings)
  if e.ndim != 2 or len(e) != 2 * num_pairs:
    raise ValueError(f"embeddings must have shape (2 * {num_pairs}, dim), got {e.shape}")
  return metrics_from_ranks(ranks(e[:num_pairs], e[num_pairs:]))
