"""Tests for the shipped docstring task: hash, disjoint splits, no truncation, partners."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aprec.models import docstrings


@pytest.fixture(scope="module")
def pairs():
  return docstrings.load_pairs()


def test_splits_are_disjoint_by_module_and_sized(pairs):
  tops = {
      name: {p["module"].split(".")[0] for p in pairs if p["split"] == name}
      for name in docstrings.SPLITS
  }
  assert not tops["calibration"] & tops["val"]
  assert not tops["calibration"] & tops["test"]
  assert not tops["val"] & tops["test"]
  counts = [sum(p["split"] == name for p in pairs) for name in docstrings.SPLITS]
  assert counts == [docstrings.PAIRS_PER_SPLIT] * 3


def test_texts_are_unique_and_the_summary_is_not_in_the_body(pairs):
  for field in ("summary", "body"):
    texts = [p[field].lower() for p in pairs]
    assert len(set(texts)) == len(texts)
  assert not any(p["summary"] in p["body"] for p in pairs)


def test_loaded_splits_fit_without_truncation_and_pair_up():
  splits = docstrings.load_splits()
  for split in splits:
    ids, mask = split.x
    n = split.num_pairs
    assert ids.shape == mask.shape == (2 * n, docstrings.MAX_TOKENS)
    lengths = mask.sum(1)
    assert np.all(ids[np.arange(2 * n), lengths - 1] == 102)  # [SEP] kept: nothing was cut
    np.testing.assert_array_equal(split.y[split.y], np.arange(2 * n))
    assert split.y[0] == n and len(split.texts) == 2 * n


def test_a_changed_file_is_refused(tmp_path):
  changed = tmp_path / "pairs.json"
  data = json.loads(docstrings.DATA_FILE.read_text())
  data["pairs"][0]["body"] += " extra"
  changed.write_text(json.dumps(data))
  with pytest.raises(docstrings.DataError, match=f"expected {docstrings.SHA256}"):
    docstrings.load_pairs(changed)
  with pytest.raises(docstrings.DataError, match="missing"):
    docstrings.load_pairs(tmp_path / "absent.json")
