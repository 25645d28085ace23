"""Exports the real MiniLM-L6 at a mixed assignment and measures the artifact against the emulator.

Usage::

  python scripts/export_minilm.py [--plan plan.json] [--rows 128] [--repeats 10]
      [--out runs/bench/export_minilm.json]

The model takes ``(ids, mask)``; the mask is given as bool, so the emulator finds it among
the inputs (``mask_input``) and its dynamic scales ignore padded positions, and the
artifact does the same. The assignment is a plan (``--plan``: the JSON of ``aprec plan
minilm_l6 --budget bits=6 --json``, its ``"modes"``), or else written by hand
(``assignment()``): projections at int8, the two attention products of every block at
bf16, the MLP's first projection of blocks 1-4 at int4, the values of blocks 0-2 at
fp8_e4m3, the last MLP output at fp16. Measured on the first ``--rows`` texts of the
docstring task's test split:

- op by op (``jax.disable_jit()``): the program's outputs against the emulator's on 4 rows
  (expected bitwise equal);
- compiled: the loaded artifact (``aprec.export.load``) against ``jax.jit(emulator)``:
  max |Δ| of the unit embeddings, the smallest cosine, and the time per call of each (median of
  ``--repeats`` interleaved pairs);
- bytes: the artifact's arrays over all parameters at fp32.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

import aprec.export
from aprec import Emulator, models
from aprec.export import program as program_lib

_REPO = pathlib.Path(__file__).resolve().parents[1]
N_LAYERS = 6


def assignment() -> dict[str, str]:
  """The hand-written mixed assignment (op name → mode); unnamed ops run at int8."""
  modes = {}
  for layer in range(N_LAYERS):
    modes[f"layers/{layer}/dot_general"] = "bf16"
    modes[f"layers/{layer}/dot_general_1"] = "bf16"
  for layer in (1, 2, 3, 4):
    modes[f"layers/{layer}/mlp_in"] = "int4"
  for layer in (0, 1, 2):
    modes[f"layers/{layer}/value"] = "fp8_e4m3"
  modes[f"layers/{N_LAYERS - 1}/mlp_out"] = "fp16"
  return modes


def _median_ms(fn, repeats: int, calls: int = 3) -> list[float]:
  samples = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(calls):
      out = fn()
    jax.block_until_ready(out)
    samples.append((time.perf_counter() - start) / calls * 1e3)
  return samples


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--plan", type=pathlib.Path, help="a plan's JSON (its 'modes')")
  parser.add_argument("--rows", type=int, default=128, help="test texts to run")
  parser.add_argument("--repeats", type=int, default=10, help="timed pairs of calls")
  parser.add_argument(
      "--out", type=pathlib.Path, default=_REPO / "runs" / "bench" / "export_minilm.json"
  )
  args = parser.parse_args(argv)
  model = models.load("minilm_l6")
  ids, mask = model.data.test.x
  inputs = (jnp.asarray(ids[: args.rows]), jnp.asarray(mask[: args.rows], bool))
  emu = Emulator(model.apply_fn, model.params, inputs)
  if args.plan is not None:
    modes = emu.assignment(json.loads(args.plan.read_text())["modes"])
  else:
    modes = emu.assignment(assignment(), default="int8")
  print(f"{emu!r}; padding mask: input {emu.mask_input}")

  small = (inputs[0][:4], inputs[1][:4])
  program = program_lib.build(emu, model.params, modes)
  with jax.disable_jit():
    got, expected = program(small), emu(model.params, small, modes)
  op_by_op = float(np.abs(np.asarray(got) - np.asarray(expected)).max())
  print(f"op by op, 4 rows: max |Δ| {op_by_op}")

  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    summary = aprec.export.export(emu, model.params, modes, pathlib.Path(tmp) / "minilm")
    export_s = time.perf_counter() - start
    artifact = aprec.export.load(summary.directory)
  emulator = jax.jit(emu)
  y_emu = np.asarray(emulator(model.params, inputs, modes))
  y_art = np.asarray(artifact(inputs))
  a_ms, e_ms = [], []
  for _ in range(args.repeats):
    a_ms += _median_ms(lambda: artifact(inputs), 1)
    e_ms += _median_ms(lambda: emulator(model.params, inputs, modes), 1)
  ratio = float(np.median(np.array(a_ms) / np.array(e_ms)))
  cosine = np.sum(y_art * y_emu, -1) / (
      np.linalg.norm(y_art, axis=-1) * np.linalg.norm(y_emu, axis=-1)
  )
  result = {
      "rows": args.rows,
      "plan": None if args.plan is None else str(args.plan),
      "assignment": summary.assignment,
      "mask_input": emu.mask_input,
      "op_by_op_max_abs_diff_4_rows": op_by_op,
      "compiled_max_abs_diff": float(np.abs(y_art - y_emu).max()),
      "compiled_min_cosine": float(cosine.min()),
      "artifact_ms": float(np.median(a_ms)),
      "emulator_ms": float(np.median(e_ms)),
      "export_over_emulator": ratio,
      "array_bytes": summary.array_bytes,
      "fp32_param_bytes": summary.fp32_param_bytes,
      "bytes_over_fp32": summary.bytes_over_fp32,
      "program_bytes": summary.program_bytes,
      "export_s": round(export_s, 1),
  }
  print(json.dumps(result, indent=2))
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(result, indent=2) + "\n")
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
