"""Where compiled and op-by-op emulation part ways (issue 13.14), on ``digits_vit``.

Runs the emulator at one uniform mode compiled (``jax.jit``) and op by op
(``jax.disable_jit()``) on 64 test images, recording every op's operands, and prints, for the
first ops whose activation operand differs: the fraction of elements that differ, the fraction
of per-token and per-tensor scales (``max |x|``) that differ, and the fraction of int8 grid
values that flip under each scaling. Writes ``runs/bench/compiled_vs_op_by_op.json``.

  python scripts/compiled_vs_op_by_op.py [--mode int8] [--model digits_vit]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from aprec import Emulator, models  # noqa: E402
from aprec.emulator import formats, pak  # noqa: E402
from aprec.emulator.formats import mode_index  # noqa: E402


def _grid(x: np.ndarray, reduce_axes) -> np.ndarray:
  """int8 grid values of ``x`` with the PAK's rule (``formats.quantize``)."""
  return np.asarray(formats.quantize(jnp.asarray(x), mode_index("int8"), reduce_axes)[0])


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--model", default="digits_vit")
  ap.add_argument("--mode", default="int8")
  ap.add_argument("--images", type=int, default=64)
  ap.add_argument(
      "--out", type=pathlib.Path, default=pathlib.Path("runs/bench/compiled_vs_op_by_op.json")
  )
  args = ap.parse_args()
  model = models.load(args.model)
  x = jnp.asarray(model.data.test.x[: args.images])
  emu = Emulator(model.apply_fn, model.params, x)
  mode = jnp.int32(mode_index(args.mode))

  def run(params, inputs):
    seen = {}

    def compute(i, contraction, lhs, rhs):
      seen[i] = lhs
      return pak.apply(contraction, lhs, rhs, mode)

    return emu.run_with(params, inputs, compute), [seen[i] for i in range(len(emu.ops))]

  out_jit, lhs_jit = jax.jit(run)(model.params, x)
  with jax.disable_jit():
    out_eager, lhs_eager = run(model.params, x)
  rows = []
  for op, a, b in zip(emu.ops, lhs_jit, lhs_eager):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if np.array_equal(a, b) or a.ndim < 2:
      continue
    token_a, token_b = np.abs(a).max(-1, keepdims=True), np.abs(b).max(-1, keepdims=True)
    tensor_a, tensor_b = np.abs(a).max(), np.abs(b).max()
    rows.append(
        {
            "op": op.name,
            "elements_differ": float((a != b).mean()),
            "per_token_scales_differ": float((token_a != token_b).mean()),
            "per_tensor_scale_differs": bool(tensor_a != tensor_b),
            "int8_flips_per_token": float(
                (_grid(a, (a.ndim - 1,)) != _grid(b, (b.ndim - 1,))).mean()
            ),
            "int8_flips_per_tensor": float((_grid(a, None) != _grid(b, None)).mean()),
        }
    )
  result = {
      "model": args.model,
      "mode": args.mode,
      "images": args.images,
      "max_abs_output_difference": float(jnp.max(jnp.abs(out_jit - out_eager))),
      "ops": rows,
  }
  print(
      f"{args.model} at {args.mode}: max |compiled - op by op| = "
      f"{result['max_abs_output_difference']:.3g}"
  )
  print(
      f"{'op':28} {'elem≠':>7} {'token scale≠':>13} {'tensor≠':>8} {'flips/token':>12} "
      f"{'flips/tensor':>13}"
  )
  for r in rows:
    print(
        f"{r['op']:28} {r['elements_differ']:7.3f} {r['per_token_scales_differ']:13.3f} "
        f"{r['per_tensor_scale_differs']!s:>8} {r['int8_flips_per_token']:12.2e} "
        f"{r['int8_flips_per_tensor']:13.2e}"
    )
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
  main()
