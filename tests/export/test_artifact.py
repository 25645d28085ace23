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
from models import tiny, tiny_encoder

import aprec.export
from aprec import Emulator
from aprec.export import loader

MODES = "int4,embed=int8,head=fp8_e4m3"
ENCODER_MODES = "int8,key=fp8_e4m3,value=int4,head=bf16"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  module, params, x = tiny()
  emu = Emulator(module.apply, params, x)
  out = tmp_path_factory.mktemp("export") / "tiny"
  summary = aprec.export.export(emu, params, MODES, out)
  return emu, params, x, summary


@pytest.fixture(scope="module")
def encoder_exported(tmp_path_factory):
  """The (ids, mask) encoder with calibrated ranges; its padding mask found among the inputs."""
  module, params, inputs = tiny_encoder()
  emu = Emulator(module.apply, params, inputs)
  amax = emu.calibrate(params, [inputs])
  out = tmp_path_factory.mktemp("export") / "encoder"
  summary = aprec.export.export(emu, params, ENCODER_MODES, out, activation_amax=amax)
  return emu, params, inputs, amax, summary


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


def test_round_trip_in_a_fresh_process_without_aprec(exported, encoder_exported, tmp_path):
  emu, params, x, summary = exported
  enc, enc_params, (ids, mask), amax, enc_summary = encoder_exported
  np.savez(tmp_path / "in.npz", x=np.asarray(x), ids=np.asarray(ids), mask=np.asarray(mask))
  script = textwrap.dedent(f"""
      import importlib.util, sys
      import numpy as np
      spec = importlib.util.spec_from_file_location("standalone_loader", {loader.__file__!r})
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      a = np.load({str(tmp_path / 'in.npz')!r})
      y = module.load({str(summary.directory)!r})(a["x"])
      # (ids, mask), ids as int64 as numpy makes them: cast to the artifact's int32.
      z = module.load({str(enc_summary.directory)!r})((a["ids"].astype(np.int64), a["mask"]))
      np.savez({str(tmp_path / 'out.npz')!r}, y=np.asarray(y), z=np.asarray(z))
      leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("aprec", "flax", "models"))
      assert not leaked, leaked
  """)
  subprocess.run(
      [sys.executable, "-c", script],
      check=True,
      cwd=tmp_path,
      env={"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"},
  )
  out = np.load(tmp_path / "out.npz")
  expected = np.asarray(jax.jit(emu)(params, x, emu.assignment(MODES)))
  np.testing.assert_allclose(out["y"], expected, rtol=0, atol=1e-5 * np.abs(expected).max())
  modes = enc.assignment(ENCODER_MODES)
  expected = np.asarray(jax.jit(enc)(enc_params, (ids, mask), modes, activation_amax=amax))
  np.testing.assert_allclose(out["z"], expected, rtol=0, atol=1e-5 * np.abs(expected).max())


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


def test_inputs_of_another_structure_shape_dtype_or_batch_are_named(encoder_exported):
  _, _, (ids, mask), _, summary = encoder_exported
  manifest = json.loads((summary.directory / "manifest.json").read_text())
  assert manifest["inputs"]["mask"] == "[1]" and manifest["inputs"]["calibrated"]
  assert [leaf["shape"] for leaf in manifest["inputs"]["leaves"]] == [[None, 6], [None, 6]]
  artifact = aprec.export.load(summary.directory)
  assert artifact((ids[:1], mask[:1])).shape == (1, 3)  # any batch size
  with pytest.raises(ValueError, match=r"inputs have structure PyTreeDef\(\{'ids'.*\(\*, \*\)"):
    artifact({"ids": ids, "mask": mask})
  with pytest.raises(
      ValueError, match=r"input \[1\] has shape \(4, 7\); this artifact takes \(batch, 6\)"
  ):
    artifact((ids, jnp.ones((4, 7), bool)))
  with pytest.raises(ValueError, match=r"input \[0\] has dtype float32; this artifact takes int32"):
    artifact((ids.astype(jnp.float32), mask))
  with pytest.raises(ValueError, match=r"batch size \(input \[0\] has 4, input \[1\] has 2\)"):
    artifact((ids, mask[:2]))
