"""A retrieval task with external labels: match a function's summary to the rest of its docstring.

The pairs were extracted once from the standard library's source by
``scripts/extract_docstrings.py`` and ship in ``data_files/stdlib_docstrings.json`` (SHA-256
checked at load), so the task does not change with the Python version. Each pair is a
function's one-line summary (the query) and its docstring without that line (the document);
whole top-level modules go to one split, so calibration, validation and test share no module.

A split holds ``2 N`` texts as model inputs ``x = (ids, mask)``: the ``N`` summaries, then
the ``N`` bodies in the same order, and ``y``, the row of each text's partner. Retrieval ranks,
for each summary, the split's ``N`` bodies by cosine similarity
(``aprec.emulator.RetrievalEvaluator``).

Example:
  >>> splits = load_splits()
  >>> [len(s.y) // 2 for s in splits], splits.test.x[0].shape[1]
  ([256, 256, 256], 64)
"""

from __future__ import annotations

import functools
import hashlib
import json
import pathlib
from typing import NamedTuple

import numpy as np

from aprec.models import minilm_files

DATA_FILE = pathlib.Path(__file__).parent / "data_files" / "stdlib_docstrings.json"
SHA256 = "877b8d99c6c609ff09e542fc2ae9bed0936962e6344863e568945b25082ad015"
SPLITS = ("calibration", "val", "test")
PAIRS_PER_SPLIT = 256
MAX_TOKENS = 64  # every shipped text fits: the extraction drops longer ones


class TextSplit(NamedTuple):
  """One split of the task.

  Attributes:
    x: ``(ids, mask)``, each ``(2 N, MAX_TOKENS)`` (int32 ids, boolean mask): summaries,
      then bodies.
    y: ``(2 N,)`` int32, the row of each text's partner (``y[i] = N + i`` for a summary).
    texts: the ``2 N`` texts, in row order.
    functions: ``module.qualname`` of each pair (``N`` entries).
  """

  x: tuple[np.ndarray, np.ndarray]
  y: np.ndarray
  texts: tuple[str, ...]
  functions: tuple[str, ...]

  @property
  def num_pairs(self) -> int:
    return len(self.functions)

  def head(self, num_pairs: int) -> TextSplit:
    """The first ``num_pairs`` pairs as a split of their own: their summaries, then bodies.

    Example:
      >>> small = load_splits().val.head(3)
      >>> small.num_pairs, small.x[0].shape, small.y.tolist()
      (3, (6, 64), [3, 4, 5, 0, 1, 2])
    """
    n = self.num_pairs
    if not 1 <= num_pairs <= n:
      raise ValueError(f"num_pairs = {num_pairs}; this split has 1..{n} pairs")
    rows = np.concatenate([np.arange(num_pairs), n + np.arange(num_pairs)])
    partner = np.concatenate([np.arange(num_pairs, 2 * num_pairs), np.arange(num_pairs)])
    return TextSplit(
        x=tuple(_read_only(a[rows]) for a in self.x),
        y=_read_only(partner.astype(np.int32)),
        texts=tuple(self.texts[r] for r in rows),
        functions=self.functions[:num_pairs],
    )


class TextSplits(NamedTuple):
  """The task's calibration, validation and test splits (disjoint by top-level module)."""

  calibration: TextSplit
  val: TextSplit
  test: TextSplit


class DataError(RuntimeError):
  """The shipped task file is missing or not the one recorded."""


def load_pairs(path: pathlib.Path = DATA_FILE, sha256: str = SHA256) -> list[dict]:
  """The shipped pairs (dicts with ``module``, ``function``, ``summary``, ``body``, ``split``).

  Raises:
    DataError: the file is missing or its SHA-256 is not ``sha256``.
  """
  if not path.is_file():
    raise DataError(
        f"{path} is missing; it ships with aprec (recreate it with "
        "python scripts/extract_docstrings.py)"
    )
  raw = path.read_bytes()
  digest = hashlib.sha256(raw).hexdigest()
  if digest != sha256:
    raise DataError(
        f"{path} has SHA-256 {digest}, expected {sha256}; the task texts were "
        "changed. Restore the shipped file (git checkout) rather than editing it"
    )
  return json.loads(raw)["pairs"]


def _read_only(a: np.ndarray) -> np.ndarray:
  a.flags.writeable = False
  return a


def make_split(pairs: list[dict], max_tokens: int = MAX_TOKENS) -> TextSplit:
  """A ``TextSplit`` of the given pairs, tokenized to ``max_tokens``."""
  n = len(pairs)
  texts = tuple(p["summary"] for p in pairs) + tuple(p["body"] for p in pairs)
  ids, mask = minilm_files.tokenize(texts, max_tokens)
  partner = np.concatenate([np.arange(n, 2 * n), np.arange(n)]).astype(np.int32)
  return TextSplit(
      x=(_read_only(ids), _read_only(mask)),
      y=_read_only(partner),
      texts=texts,
      functions=tuple(f"{p['module']}.{p['function']}" for p in pairs),
  )


@functools.lru_cache(maxsize=1)
def load_splits() -> TextSplits:
  """The three shipped splits, tokenized (cached; the arrays are read-only)."""
  pairs = load_pairs()
  return TextSplits(*(make_split([p for p in pairs if p["split"] == name]) for name in SPLITS))
