"""Writing an export artifact: program, arrays, assignment, op table and checksum manifest.

The layout and the reader are in ``loader.py`` (which needs only jax and numpy); this
module builds the program and writes every file through
``aprec.checkpoint.write_directory`` (staged, locked, swapped in only when complete, an
existing artifact replaced only when asked), so a failed export never leaves a
half-written artifact.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from aprec import checkpoint
from aprec.emulator.core import Emulator
from aprec.emulator.formats import MODES
from aprec.export import program as program_lib
from aprec.export.loader import FORMAT, MANIFEST, sha256

PROGRAM_FILE = "program.jaxexport"
ASSIGNMENT_FILE = "assignment.json"
OPS_FILE = "ops.json"
ARRAYS_DIR = "arrays"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportSummary:
  """What an export wrote.

  Attributes:
    directory: the artifact.
    assignment: ``{op name: mode}``.
    array_bytes: bytes of every array the program reads (stored weights, scales, the
      parameters no op consumes).
    fp32_param_bytes: bytes of all the model's parameters at float32.
    program_bytes: size of the serialized program.
    params_left_out: parameters replaced by their stored form.
  """

  directory: pathlib.Path
  assignment: dict[str, str]
  array_bytes: int
  fp32_param_bytes: int
  program_bytes: int
  params_left_out: tuple[str, ...]

  @property
  def bytes_over_fp32(self) -> float:
    return self.array_bytes / self.fp32_param_bytes


def _as_modes(emu: Emulator, assignment: Any) -> Any:
  if isinstance(assignment, (str, Mapping)):
    return emu.assignment(assignment)
  return getattr(assignment, "assignment", assignment)  # a planner.Plan, or an array


def _inputs_entry(program: program_lib.Program) -> dict[str, Any]:
  """The manifest's description of the inputs: pytree structure, leaves, padding mask."""
  paths, treedef = jax.tree_util.tree_flatten_with_path(program.input_spec)
  return {
      "tree": str(treedef),
      "leaves": [
          {
              "path": jax.tree_util.keystr(path),
              "shape": [None, *spec.shape[1:]],
              "dtype": spec.dtype.name,
          }
          for path, spec in paths
      ],
      "mask": program.mask_input,
      "calibrated": program.calibrated,
  }


def _write_json(path: pathlib.Path, value: Any) -> None:
  path.write_text(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def export(
    model: Emulator | Any,
    params: Any,
    assignment: Any,
    out_dir: str | os.PathLike[str],
    *,
    example_inputs: Any = None,
    activation_amax: Any = None,
    replace: bool = False,
    extra_json: Mapping[str, Any] | None = None,
    platforms: Sequence[str] | None = program_lib.DEFAULT_PLATFORMS,
) -> ExportSummary:
  """Write ``model`` at ``assignment`` as a self-contained artifact in ``out_dir``.

  Args:
    model: an ``Emulator``, or an ``apply_fn(params, x)`` with ``example_inputs``.
    params: the parameters whose weights are stored.
    assignment: an int32 mode array (one per op), a mode string (``"int8,Dense_1=fp32"``),
      a ``{op: mode}`` mapping, or a plan with an ``.assignment``.
    out_dir: the artifact directory; an existing one is replaced only with ``replace``.
    example_inputs: a batch of inputs, needed when ``model`` is an ``apply_fn``: any pytree
      whose leaves share a leading batch axis (the artifact takes any batch size).
    activation_amax: optional calibrated operand ranges (``emulator.calibrate``), used as
      ``emulator(..., activation_amax=...)`` uses them.
    replace: replace an existing ``out_dir``.
    extra_json: more files to write (name → JSON value), listed in the manifest.
    platforms: what the program is lowered for (``jax.export`` names: cpu, cuda, rocm,
      tpu); default: the platform of JAX's default backend.

  Example:
    >>> import jax, jax.numpy as jnp, flax.linen as nn, tempfile, pathlib
    >>> model, x = nn.Sequential([nn.Dense(3)]), jnp.ones((2, 4))
    >>> params = model.init(jax.random.key(0), x)
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "dense"
    >>> summary = export(model.apply, params, "int4", out, example_inputs=x)
    >>> summary.array_bytes, summary.fp32_param_bytes
    (30, 60)
  """
  emu = model if isinstance(model, Emulator) else Emulator(model, params, example_inputs)
  out_dir = pathlib.Path(out_dir)
  target = dict(
      overwrite=replace, marker=MANIFEST, what="export artifact", flag="replace=True (`--replace`)"
  )
  checkpoint.check_target(out_dir, **target)  # before the work
  program = program_lib.build(
      emu, params, _as_modes(emu, assignment), activation_amax=activation_amax
  )
  exported = program.export(platforms)
  serialized = exported.serialize()
  modes = program_lib.mode_names(program)
  arrays_meta = []
  with checkpoint.write_directory(out_dir, **target) as staging:
    (staging / ARRAYS_DIR).mkdir()
    for index, a in enumerate(program.arrays):
      relative = f"{ARRAYS_DIR}/{index:03d}-{a.name}.bin"
      (staging / relative).write_bytes(np.ascontiguousarray(a.array).tobytes())
      arrays_meta.append(
          {
              "file": relative,
              "dtype": a.array.dtype.name,
              "shape": list(a.array.shape),
              "role": a.role,
              "op": a.op,
              "mode": modes[a.op] if a.op else None,
          }
      )
    (staging / PROGRAM_FILE).write_bytes(serialized)
    _write_json(
        staging / ASSIGNMENT_FILE,
        {"modes": modes, "assignment": [int(m) for m in program.modes], "mode_table": list(MODES)},
    )
    _write_json(
        staging / OPS_FILE,
        {
            "ops": [op.to_dict() for op in emu.ops],
            "passthrough": [vars(p) for p in emu.passthrough],
            "params_left_out": list(program.params_left_out),
        },
    )
    for name, value in (extra_json or {}).items():
      _write_json(staging / name, value)
    files = sorted(p for p in staging.rglob("*") if p.is_file())
    _write_json(
        staging / MANIFEST,
        {
            "format": FORMAT,
            "files": {
                p.relative_to(staging).as_posix(): {"sha256": sha256(p), "bytes": p.stat().st_size}
                for p in files
            },
            "program": PROGRAM_FILE,
            "assignment": ASSIGNMENT_FILE,
            "ops": OPS_FILE,
            "arrays": arrays_meta,
            "inputs": _inputs_entry(program),
            "platforms": list(exported.platforms),
            "jax_version": jax.__version__,
        },
    )
  fp32_bytes = sum(int(np.size(v)) * 4 for v in jax.tree_util.tree_leaves(params))
  return ExportSummary(
      directory=out_dir,
      assignment=modes,
      array_bytes=sum(a.array.nbytes for a in program.arrays),
      fp32_param_bytes=fp32_bytes,
      program_bytes=len(serialized),
      params_left_out=program.params_left_out,
  )
