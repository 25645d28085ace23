"""Artifacts: bytes, round trip in a fresh process, tolerance on a reference model, bad input."""

import json
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from models import tiny

import aprec.export
from aprec import Emulator
from aprec.export import loader

MODES = "int4,embed=int8,head=fp8_e4m3"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  module, params, x = tiny()
  emu = Emulator(module.apply, params, x)
  out = tmp_path_factory.mktemp("export") / "tiny"
  summary = aprec.export.export(emu, params, MODES, out)
  return emu, params, x, summary


def _copy(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
  import shutil

  shutil.copytree(src, dst)
  return dst


def test_weight_files_are_the_stored_weights_bitwise(exported):
  emu, params, _, summary = exported
  stored = dict(zip(emu.op_names, emu.store_weights(params, emu.assignment(MODES))))
  manifest = json.loads((summary.directory / "manifest.json").read_text())
  seen = set()
  for entry in manifest["arrays"]:
    if entry["op"] is None:
      continue
    field = "data" if entry["role"] == "weight" else "scale"
    expected = np.asarray(getattr(stored[entry["op"]], field))
    assert (summary.directory / entry["file"]).read_bytes() == expected.tobytes()
    assert entry["dtype"] == expected.dtype.name and entry["shape"] == list(expected.shape)
    seen.add(entry["op"])
  assert seen == {op.name for op in emu.ops if op.has_weight}
  packed_bytes = sum(p.nbytes for p in stored.values() if p is not None)
  biases = sum(np.size(params["params"][k]["bias"]) * 4 for k in ("conv", "embed", "head"))
  assert summary.array_bytes == packed_bytes + biases


def test_round_trip_in_a_fresh_process_without_aprec(exported, tmp_path):
  emu, params, x, summary = exported
  np.save(tmp_path / "x.npy", np.asarray(x))
  script = textwrap.dedent(f"""
      import importlib.util, sys
      import numpy as np
      spec = importlib.util.spec_from_file_location("standalone_loader", {loader.__file__!r})
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      y = module.load({str(summary.directory)!r})(np.load({str(tmp_path / 'x.npy')!r}))
      np.save({str(tmp_path / 'y.npy')!r}, np.asarray(y))
      leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("aprec", "flax", "models"))
      assert not leaked, leaked
  """)
  subprocess.run(
      [sys.executable, "-c", script],
      check=True,
      cwd=tmp_path,
      env={"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"},
  )
  y = np.load(tmp_path / "y.npy")
  expected = np.asarray(jax.jit(emu)(params, x, emu.assignment(MODES)))
  np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_corrupt_truncated_or_missing_files_are_named(exported, tmp_path):
  src = exported[3].directory
  manifest = json.loads((src / "manifest.json").read_text())
  weight = next(e["file"] for e in manifest["arrays"] if e["role"] == "weight")

  bad = _copy(src, tmp_path / "flipped")
  data = bytearray((bad / weight).read_bytes())
  data[0] ^= 0x10
  (bad / weight).write_bytes(bytes(data))
  with pytest.raises(aprec.export.ArtifactError, match=rf"{weight}.*SHA-256"):
    aprec.export.load(bad)

  short = _copy(src, tmp_path / "truncated")
  (short / "program.jaxexport").write_bytes((short / "program.jaxexport").read_bytes()[:100])
  with pytest.raises(aprec.export.ArtifactError, match=r"program\.jaxexport has 100 bytes"):
    aprec.export.load(short)

  gone = _copy(src, tmp_path / "gone")
  (gone / "ops.json").unlink()
  with pytest.raises(aprec.export.ArtifactError, match=r"ops\.json is missing"):
    aprec.export.load(gone)

  broken = _copy(src, tmp_path / "broken")
  (broken / "manifest.json").write_text("{not json")
  with pytest.raises(aprec.export.ArtifactError, match=r"manifest\.json is not valid JSON"):
    aprec.export.load(broken)


def test_bad_inputs_and_assignments_are_named(exported, tmp_path):
  emu, params, x, summary = exported
  artifact = aprec.export.load(summary.directory)
  with pytest.raises(
      ValueError,
      match=r"input has shape \(5, 8, 8, 1\); this artifact takes " r"\(batch, 6, 6, 1\)",
  ):
    artifact(jnp.ones((5, 8, 8, 1)))
  with pytest.raises(ValueError, match=r"unknown op name\(s\) \['Dense_0'\]"):
    aprec.export.export(emu, params, {"Dense_0": "int8"}, tmp_path / "other")
  with pytest.raises(FileExistsError, match="replace=True"):
    aprec.export.export(emu, params, MODES, summary.directory)
