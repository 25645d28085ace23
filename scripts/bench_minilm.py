"""MiniLM-L6 peer comparison: aprec's uniform int8 emulation against qwix's int8, same model.

  python scripts/bench_minilm.py [--rows 64] [--repeats 7] [--processes 1]
                                 [--out runs/bench/minilm.json]

Both run all-MiniLM-L6-v2 with its real weights on the same ``rows`` texts of the docstring
task's test split (64 tokens each). qwix: ``QtProvider`` with every op at int8 weights and
activations (per-channel weights, dynamic activations at qwix's default granularity,
int8 x int8 -> int32 products), applied to the nnx model with ``qwix.quantize_model``.
aprec: the ``Emulator`` at uniform ``int8``, activations per token (the granularity
closest to qwix's; the emulator's default), with ``integer_fast_path=True``, so an
all-integer assignment runs a program without per-op branches. ``ours`` is the emulator's
own call (``emu(params, x, modes)``, jitted inside; the assignment an argument, read on the
host to pick the program: switching never recompiles); ``ours_jit`` is ``jax.jit(emu)``,
the assignment traced and one ``lax.cond`` around the model picking the program;
``ours_general`` is ``jax.jit`` of the default setting (a ``lax.cond`` per op);
``ours_mixed_int`` runs ``ours`` with an int8/int4 mix (the odd ops int4),
``ours_per_tensor`` the general one with activations per tensor. qwix bakes its precisions
into the compiled model; so does ``ours_constant``: the general emulator with the int8
assignment a compile-time constant (``jax.jit(lambda p, x: emu(p, x, assignment))``).
Fidelity is the mean ``1 - cos`` of each text's embedding against the plain fp32 forward.

Timing: everything compiled first; the sides interleaved in a rotating order, each ratio the
median of the per-repeat ratios. Writes ``"ratios"``: ``ours_over_qwix_minilm_l6`` (per
token, fast path, target <= 1.0), ``ours_jit_over_qwix_minilm_l6``,
``ours_general_over_qwix_minilm_l6``,
``ours_constant_over_qwix_minilm_l6`` (the assignment baked in),
``ours_mixed_int_over_qwix_minilm_l6``, ``ours_per_tensor_over_qwix_minilm_l6``, and some
over the fp32 forward; ``first_call_s`` holds each side's compilation. With
``--processes N``, the whole measurement runs in N fresh processes and ``"ratios"`` holds
the medians (``"ratio_ranges"`` the extremes, ``"runs"`` every process's result).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

_REPO = pathlib.Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
  sys.path.insert(0, str(_REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import qwix  # noqa: E402
from flax import nnx  # noqa: E402

import aprec  # noqa: E402
from timing import interleaved, ratio  # noqa: E402
from aprec import models  # noqa: E402
from aprec.emulator.pak import ActivationScaling  # noqa: E402
from aprec.models import minilm_l6  # noqa: E402


def one_minus_cos(y: jax.Array, ref: jax.Array) -> float:
  y, ref = np.asarray(y, np.float64), np.asarray(ref, np.float64)
  cos = np.sum(y * ref, -1) / (np.linalg.norm(y, axis=-1) * np.linalg.norm(ref, axis=-1))
  return float(np.mean(1.0 - cos))


def qwix_int8(params, inputs):
  """MiniLM-L6 quantized by qwix (int8 weights and activations everywhere), jitted."""
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: minilm_l6.MiniLM(rngs=nnx.Rngs(0))))
  model = nnx.merge(graphdef, params)
  provider = qwix.QtProvider([qwix.QtRule(module_path=".*", weight_qtype="int8", act_qtype="int8")])
  qmodel = qwix.quantize_model(model, provider, inputs)
  qgraph, qstate = nnx.split(qmodel)
  return jax.jit(lambda state, x: nnx.merge(qgraph, state)(x)), qstate


def measure(rows: int = 64, repeats: int = 7, calls: int = 2) -> dict:
  """The comparison (module doc) as the JSON ``main`` writes; prints a table."""
  model = models.load("minilm_l6")
  params = model.params
  x = tuple(jnp.asarray(a[:rows]) for a in model.data.test.x)
  fp32 = jax.jit(model.apply_fn)
  emulator = lambda **options: aprec.Emulator(model.apply_fn, params, x, **options)
  general = emulator()
  ours_call = emulator(integer_fast_path=True)  # the emulator's own call: no jax.jit
  ours_jit = jax.jit(emulator(integer_fast_path=True))
  ours_general = jax.jit(general)
  ours_per_tensor = jax.jit(emulator(activation_scaling=ActivationScaling.PER_TENSOR))
  int8 = general.assignment("int8")
  int4 = general.assignment("int4")
  mixed_int = jnp.where(jnp.arange(len(int8)) % 2 == 1, int4, int8)
  constant = jax.jit(lambda p, inputs: general(p, inputs, np.asarray(int8)))
  q_fn, q_state = qwix_int8(params, x)
  fns = {
      "fp32": lambda: fp32(params, x),
      "ours": lambda: ours_call(params, x, int8),
      "ours_jit": lambda: ours_jit(params, x, int8),
      "ours_general": lambda: ours_general(params, x, int8),
      "ours_constant": lambda: constant(params, x),
      "ours_mixed_int": lambda: ours_call(params, x, mixed_int),
      "ours_per_tensor": lambda: ours_per_tensor(params, x, int8),
      "qwix": lambda: q_fn(q_state, x),
  }
  compile_s = {}
  outputs = {}
  for k, f in fns.items():
    start = time.perf_counter()
    outputs[k] = jax.block_until_ready(f())
    compile_s[k] = round(time.perf_counter() - start, 2)
  s = interleaved(fns, repeats, calls)
  ms = {k: 1e3 * statistics.median(v) for k, v in s.items()}
  fidelity = {k: one_minus_cos(outputs[k], outputs["fp32"]) for k in fns if k != "fp32"}
  ratios = {
      "ours_over_qwix_minilm_l6": ratio(s["ours"], s["qwix"]),
      "ours_jit_over_qwix_minilm_l6": ratio(s["ours_jit"], s["qwix"]),
      "ours_general_over_qwix_minilm_l6": ratio(s["ours_general"], s["qwix"]),
      "ours_constant_over_qwix_minilm_l6": ratio(s["ours_constant"], s["qwix"]),
      "ours_mixed_int_over_qwix_minilm_l6": ratio(s["ours_mixed_int"], s["qwix"]),
      "ours_per_tensor_over_qwix_minilm_l6": ratio(s["ours_per_tensor"], s["qwix"]),
      "ours_over_fp32_minilm_l6": ratio(s["ours"], s["fp32"]),
      "ours_general_over_fp32_minilm_l6": ratio(s["ours_general"], s["fp32"]),
      "qwix_over_fp32_minilm_l6": ratio(s["qwix"], s["fp32"]),
  }
  for k in fns:
    print(
        f"{k:16s} {ms[k]:9.1f} ms/call   1-cos {fidelity.get(k, 0.0):.2e}   "
        f"(first call {compile_s[k]} s)"
    )
  for k, v in ratios.items():
    print(f"{k:40s} {v:.3f}")
  return {
      "ratios": ratios,
      "ms_per_call": ms,
      "one_minus_cos_vs_fp32": fidelity,
      "first_call_s": compile_s,
      "rows": rows,
      "tokens": int(x[0].shape[1]),
      "repeats": repeats,
      "calls_per_sample": calls,
      "platform": jax.devices()[0].platform,
      "device_kind": jax.devices()[0].device_kind,
      "machine": platform.machine(),
      "qwix": "QtProvider, int8 weights and activations, module_path='.*' (default granularity)",
  }


def over_processes(args: argparse.Namespace) -> dict:
  """``measure`` in ``args.processes`` fresh processes, one after the other: one process's
  ratios can sit a few percent from another's (where XLA placed buffers, which cores the
  threads got), a spread that repeats within one process do not sample. ``"ratios"`` holds
  each ratio's median over the processes, ``"ratio_ranges"`` its [min, max], ``"runs"``
  every process's whole result."""
  runs = []
  with tempfile.TemporaryDirectory() as tmp:
    for i in range(args.processes):
      out = pathlib.Path(tmp) / f"run{i}.json"
      command = [sys.executable, __file__, "--processes", "1", "--out", str(out)]
      command += ["--rows", str(args.rows), "--repeats", str(args.repeats)]
      subprocess.run([*command, "--calls", str(args.calls)], check=True)
      runs.append(json.loads(out.read_text()))
  keys = list(runs[0]["ratios"])
  values = {k: [r["ratios"][k] for r in runs] for k in keys}
  print(f"\n{'ratio over ' + str(len(runs)) + ' processes':40s} median   min    max")
  for k, v in values.items():
    print(f"{k:40s} {statistics.median(v):.3f}  {min(v):.3f}  {max(v):.3f}")
  return {
      "ratios": {k: statistics.median(v) for k, v in values.items()},
      "ratio_ranges": {k: [min(v), max(v)] for k, v in values.items()},
      "processes": len(runs),
      "runs": runs,
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--calls", type=int, default=2)
  parser.add_argument(
      "--processes", type=int, default=1, help="run the measurement in N fresh processes"
  )
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/bench/minilm.json"))
  args = parser.parse_args()
  if args.processes < 1:
    parser.error(f"--processes must be at least 1, got {args.processes}")
  if args.processes > 1:
    result = over_processes(args)
  else:
    result = measure(args.rows, args.repeats, args.calls)
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(result, indent=1) + "\n")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
