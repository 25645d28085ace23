"""Tests for aprec.checkpoint: orbax round trips, atomic saves and error reporting."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import textwrap

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
  checkpoint.save(tmp_path / "ck", new, {"v": 2}, overwrite=True)
  _assert_trees_equal(checkpoint.restore(tmp_path / "ck", new), new)
  assert checkpoint.load_metadata(tmp_path / "ck") == {"v": 2}
  assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_failed_save_keeps_previous_checkpoint(tmp_path):
  params = _linen_params()
  checkpoint.save(tmp_path / "ck", params, {"v": 1})
  with pytest.raises(TypeError, match="JSON-serialisable"):
    checkpoint.save(
        tmp_path / "ck", jax.tree.map(lambda a: a + 1, params), {"v": object()}, overwrite=True
    )
  _assert_trees_equal(checkpoint.restore(tmp_path / "ck", params), params)
  assert checkpoint.load_metadata(tmp_path / "ck") == {"v": 1}
  assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_save_refuses_to_replace_a_non_checkpoint_directory(tmp_path):
  (tmp_path / "precious.txt").write_text("keep me")
  with pytest.raises(ValueError, match="not a checkpoint"):
    checkpoint.save(tmp_path, _linen_params(), {}, overwrite=True)
  assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_missing_directory_has_hint(tmp_path):
  for call in (lambda p: checkpoint.restore(p, _linen_params()), checkpoint.load_metadata):
    with pytest.raises(FileNotFoundError, match="train_models.py") as info:
      call(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)


def test_corrupt_metadata(tmp_path):
  """Past the checksums (re-signed by hand), the parser still names what is wrong."""
  path = checkpoint.save(tmp_path / "ck", _linen_params(), {})
  (path / "metadata.json").write_text("{not json")
  checkpoint.write_manifest(path)
  with pytest.raises(checkpoint.CheckpointError, match="not valid JSON"):
    checkpoint.load_metadata(path)
  (path / "metadata.json").write_text("[1, 2]")
  checkpoint.write_manifest(path)
  with pytest.raises(checkpoint.CheckpointError, match="JSON object"):
    checkpoint.load_metadata(path)
  (path / "metadata.json").unlink()
  checkpoint.write_manifest(path)
  with pytest.raises(checkpoint.CheckpointError, match="no metadata.json"):
    checkpoint.load_metadata(path)


def test_deleted_params(tmp_path):
  path = checkpoint.save(tmp_path / "ck", _linen_params(), {})
  shutil.rmtree(path / "params")
  checkpoint.write_manifest(path)
  with pytest.raises(checkpoint.CheckpointError, match="no params/"):
    checkpoint.restore(path, _linen_params())


def test_damaged_params(tmp_path):
  path = checkpoint.save(tmp_path / "ck", _linen_params(), {})
  for f in (path / "params").rglob("*"):
    if f.is_file():
      f.write_bytes(b"garbage")
  checkpoint.write_manifest(path)  # past the checksums: orbax's error, cut short
  with pytest.raises(checkpoint.CheckpointError, match=str(path / "params")) as info:
    checkpoint.restore(path, _linen_params())
  assert len(str(info.value)) < 500 and "\n" not in str(info.value)


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


# --------------------------------------------------------------------------------------
# The one directory writer: refuse to replace, lock, checksums, crash recovery.

_DIRECTORY_MODULE = pathlib.Path(checkpoint.__file__).with_name("_directory.py")


def _child(code: str) -> subprocess.CompletedProcess:
  """Runs ``code`` in a fresh interpreter with the writer module (no JAX) as ``d``."""
  prelude = textwrap.dedent(f"""
      import importlib.util, os, pathlib, sys
      spec = importlib.util.spec_from_file_location("d", {str(_DIRECTORY_MODULE)!r})
      d = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(d)
  """)
  return subprocess.run(
      [sys.executable, "-c", prelude + textwrap.dedent(code)],
      capture_output=True,
      text=True,
      timeout=60,
  )


def _write(path, text, **kw):
  with checkpoint.write_directory(path, marker="x.txt", **kw) as stage:
    (stage / "x.txt").write_text(text)


def test_save_refuses_to_replace_a_checkpoint_without_overwrite(tmp_path):
  params = _linen_params()
  checkpoint.save(tmp_path / "ck", params, {"v": 1})
  with pytest.raises(checkpoint.ArtifactExistsError, match="overwrite"):
    checkpoint.save(tmp_path / "ck", jax.tree.map(lambda a: a + 1, params), {"v": 2})
  assert checkpoint.load_metadata(tmp_path / "ck") == {"v": 1}


def test_second_concurrent_writer_fails_and_replaces_nothing(tmp_path):
  _write(tmp_path / "art", "first")
  with checkpoint.write_directory(tmp_path / "art", overwrite=True, marker="x.txt") as stage:
    (stage / "x.txt").write_text("second")
    with pytest.raises(checkpoint.DirectoryLockedError, match="another process"):
      _write(tmp_path / "art", "third", overwrite=True)
  assert (tmp_path / "art" / "x.txt").read_text() == "second"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # no lock file, no staging


def test_lock_of_a_killed_writer_is_not_stale(tmp_path):
  target = tmp_path / "art"
  done = _child(f"""
      held = d.lock(pathlib.Path({str(target)!r}))
      held.__enter__()
      os._exit(9)  # killed while holding the lock: the file stays, the lock does not
  """)
  assert done.returncode == 9, done.stderr
  assert (tmp_path / ".art.lock").exists()
  _write(target, "after")
  assert (target / "x.txt").read_text() == "after"


def test_kill_between_the_two_renames_is_recovered_on_load(tmp_path):
  target = tmp_path / "art"
  _write(target, "old")
  done = _child(f"""
      rename = os.rename
      def rename_then_die(a, b):
        rename(a, b)
        if ".old-" in str(b):
          os._exit(9)
      os.rename = rename_then_die
      with d.write_directory(pathlib.Path({str(target)!r}), overwrite=True,
                             marker="x.txt") as stage:
        (stage / "x.txt").write_text("new")
  """)
  assert done.returncode == 9, done.stderr
  assert not target.exists()  # what the issue found: only hidden .old/.tmp folders
  assert any(".old-" in p.name for p in tmp_path.iterdir())
  with pytest.warns(checkpoint.RecoveryWarning) as record:
    checkpoint.verify(target)
  said = " ".join(str(w.message) for w in record)
  assert "restored" in said and "removed .art.tmp-" in said
  assert (target / "x.txt").read_text() == "old"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_leftover_staging_of_a_killed_save_is_removed_on_save(tmp_path):
  target = tmp_path / "art"
  done = _child(f"""
      with d.write_directory(pathlib.Path({str(target)!r}), marker="x.txt") as stage:
        (stage / "x.txt").write_text("half")
        os._exit(9)
  """)
  assert done.returncode == 9, done.stderr
  assert sum(p.name.startswith(".art.tmp-") for p in tmp_path.iterdir()) == 1
  with pytest.warns(checkpoint.RecoveryWarning, match="removed .art.tmp-"):
    _write(target, "whole")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def _flip_bytes(path: pathlib.Path, n: int = 40) -> None:
  data = bytearray(path.read_bytes())
  for i in range(min(n, len(data))):
    data[len(data) // 2 - n // 2 + i] ^= 0xFF
  path.write_bytes(bytes(data))


def _largest_file(directory: pathlib.Path) -> pathlib.Path:
  return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def test_bit_flips_in_shipped_weights_fail_naming_the_file(tmp_path):
  from aprec import models

  shutil.copytree(models.default_checkpoint_dir() / "digits_cnn", tmp_path / "digits_cnn")
  victim = _largest_file(tmp_path / "digits_cnn" / "params")
  _flip_bytes(victim)
  with pytest.raises(checkpoint.CheckpointError, match="fails its SHA-256") as info:
    models.load("digits_cnn", tmp_path)
  assert str(victim) in str(info.value)


def test_bit_flips_in_policy_params_fail_naming_the_file(tmp_path):
  from aprec import models
  from aprec.emulator.core import Emulator
  from aprec.rpm import policy_io

  shutil.copytree(models.default_checkpoint_dir() / "digits_cnn" / "policy", tmp_path / "p")
  model = models.load("digits_cnn")
  ops = Emulator(model.apply_fn, model.params, model.data.test.x[:4]).ops
  policy_io.load(tmp_path / "p", ops)  # the shipped policy verifies
  victim = _largest_file(tmp_path / "p" / "params")
  _flip_bytes(victim)
  with pytest.raises(policy_io.PolicyCheckpointError, match="SHA-256") as info:
    policy_io.load(tmp_path / "p", ops)
  assert str(victim) in str(info.value)


def test_unlisted_and_missing_files_are_named(tmp_path):
  _write(tmp_path / "art", "x")
  (tmp_path / "art" / "extra.bin").write_bytes(b"1")
  with pytest.raises(checkpoint.CheckpointError, match="extra.bin is not listed"):
    checkpoint.verify(tmp_path / "art")
  (tmp_path / "art" / "extra.bin").unlink()
  (tmp_path / "art" / "x.txt").unlink()
  with pytest.raises(checkpoint.CheckpointError, match="x.txt is missing"):
    checkpoint.verify(tmp_path / "art")


def test_target_that_is_a_file_is_refused_before_work(tmp_path):
  (tmp_path / "f").write_text("a file")
  with pytest.raises(checkpoint.ArtifactExistsError, match="is a file"):
    _write(tmp_path / "f", "x", overwrite=True)
  assert (tmp_path / "f").read_text() == "a file"


def test_params_hash_tells_weights_apart():
  a = _linen_params()
  assert checkpoint.params_hash(a) == checkpoint.params_hash(_linen_params())
  b = jax.tree.map(lambda x: x.at[0].add(1e-7), a)
  assert checkpoint.params_hash(a) != checkpoint.params_hash(b)


def test_replace_file_keeps_the_old_file_when_the_write_fails(tmp_path):
  target = tmp_path / "trace.jsonl"
  target.write_text("old\n")

  def fails(tmp):
    tmp.write_text("half a line")
    raise RuntimeError("killed mid-write")

  with pytest.raises(RuntimeError, match="mid-write"):
    checkpoint.replace_file(target, fails)
  assert target.read_text() == "old\n"
  assert [p.name for p in tmp_path.iterdir()] == ["trace.jsonl"]  # no temporary left
  checkpoint.replace_file(target, lambda tmp: tmp.write_text("new\n"))
  assert target.read_text() == "new\n" and len(list(tmp_path.iterdir())) == 1
