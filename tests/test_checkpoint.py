"""Tests for aprec.checkpoint: orbax round trips, atomic saves and error reporting."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from aprec import checkpoint


def _linen_params(width: int = 3) -> dict:
  kernel = jnp.arange(2 * width, dtype=jnp.float32).reshape(2, width)
  return {"params": {"Dense_0": {"kernel": kernel, "bias": jnp.full((width,), 0.5, jnp.float32)}}}


def _nnx_state(width: int = 3) -> nnx.State:
  class Tiny(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
      self.layers = nnx.List([nnx.Linear(2, width, rngs=rngs), nnx.Linear(width, 2, rngs=rngs)])
      self.pos = nnx.Param(jnp.ones((4, width)))

  return nnx.split(Tiny(nnx.Rngs(0)))[1]


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert isinstance(x, jax.Array)
    assert x.dtype == y.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("make", [_linen_params, _nnx_state], ids=["linen", "nnx"])
def test_round_trip(tmp_path, make):
  params = make()
  path = checkpoint.save(tmp_path / "ck", params, {"b": 1, "a": np.float32(0.25)})
  assert path == (tmp_path / "ck").resolve()
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
  restored = checkpoint.restore(path, abstract)
  assert type(restored) is type(params)
  _assert_trees_equal(restored, params)
  assert checkpoint.load_metadata(path) == {"a": 0.25, "b": 1}
  assert (path / "metadata.json").read_text().startswith('{\n  "a": 0.25,')
  assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temporary leftovers


def test_overwrite_replaces_checkpoint(tmp_path):
  checkpoint.save(tmp_path / "ck", _linen_params(), {"v": 1})
  new = jax.tree.map(lambda a: a + 1, _linen_params())
  checkpoint.save(tmp_path / "ck", new, {"v": 2})
  _assert_trees_equal(checkpoint.restore(tmp_path / "ck", new), new)
  assert checkpoint.load_metadata(tmp_path / "ck") == {"v": 2}
  assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_failed_save_keeps_previous_checkpoint(tmp_path):
  params = _linen_params()
  checkpoint.save(tmp_path / "ck", params, {"v": 1})
  with pytest.raises(TypeError, match="JSON-serialisable"):
    checkpoint.save(tmp_path / "ck", jax.tree.map(lambda a: a + 1, params), {"v": object()})
  _assert_trees_equal(checkpoint.restore(tmp_path / "ck", params), params)
  assert checkpoint.load_metadata(tmp_path / "ck") == {"v": 1}
  assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_save_refuses_to_replace_a_non_checkpoint_directory(tmp_path):
  (tmp_path / "precious.txt").write_text("keep me")
  with pytest.raises(ValueError, match="not a checkpoint"):
    checkpoint.save(tmp_path, _linen_params(), {})
  assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_missing_directory_has_hint(tmp_path):
  for call in (lambda p: checkpoint.restore(p, _linen_params()), checkpoint.load_metadata):
    with pytest.raises(FileNotFoundError, match="train_models.py") as info:
      call(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)


def test_corrupt_metadata(tmp_path):
  path = checkpoint.save(tmp_path / "ck", _linen_params(), {})
  (path / "metadata.json").write_text("{not json")
  with pytest.raises(checkpoint.CheckpointError, match="not valid JSON"):
    checkpoint.load_metadata(path)
  (path / "metadata.json").write_text("[1, 2]")
  with pytest.raises(checkpoint.CheckpointError, match="JSON object"):
    checkpoint.load_metadata(path)
  (path / "metadata.json").unlink()
  with pytest.raises(checkpoint.CheckpointError, match="no metadata.json"):
    checkpoint.load_metadata(path)


def test_deleted_params(tmp_path):
  import shutil
  path = checkpoint.save(tmp_path / "ck", _linen_params(), {})
  shutil.rmtree(path / "params")
  with pytest.raises(checkpoint.CheckpointError, match="no params/"):
    checkpoint.restore(path, _linen_params())


def test_damaged_params(tmp_path):
  path = checkpoint.save(tmp_path / "ck", _linen_params(), {})
  for f in (path / "params").rglob("*"):
    if f.is_file():
      f.write_bytes(b"garbage")
  with pytest.raises(checkpoint.CheckpointError, match=str(path / "params")):
    checkpoint.restore(path, _linen_params())


@pytest.mark.parametrize("make", [_linen_params, _nnx_state], ids=["linen", "nnx"])
def test_shape_mismatch(tmp_path, make):
  path = checkpoint.save(tmp_path / "ck", make(3), {})
  with pytest.raises(checkpoint.CheckpointError, match=r"float32\[3\].*expects float32\[4\]"):
    checkpoint.restore(path, make(4))


def test_dtype_mismatch(tmp_path):
  path = checkpoint.save(tmp_path / "ck", _linen_params(), {})
  wanted = jax.tree.map(lambda a: a.astype(jnp.bfloat16), _linen_params())
  with pytest.raises(checkpoint.CheckpointError, match="expects bfloat16"):
    checkpoint.restore(path, wanted)


def test_structure_mismatch(tmp_path):
  path = checkpoint.save(tmp_path / "ck", _linen_params(), {})
  wanted = _linen_params()
  wanted["params"]["Dense_1"] = wanted["params"]["Dense_0"]
  with pytest.raises(checkpoint.CheckpointError, match="missing params/Dense_1/bias"):
    checkpoint.restore(path, wanted)
  with pytest.raises(checkpoint.CheckpointError, match="unexpected params/Dense_0/bias"):
    kernel_only = {"params": {"Dense_0": {"kernel": wanted["params"]["Dense_0"]["kernel"]}}}
    checkpoint.restore(path, kernel_only)


def test_metadata_file_format(tmp_path):
  metadata = {"z": [1, 2], "a": {"y": 1, "x": None}}
  path = checkpoint.save(tmp_path / "ck", _linen_params(), metadata)
  expected = json.dumps({"a": {"x": None, "y": 1}, "z": [1, 2]}, indent=2, sort_keys=True) + "\n"
  assert (path / "metadata.json").read_text() == expected
