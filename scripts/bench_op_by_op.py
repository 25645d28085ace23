"""Op-by-op (``jax.disable_jit``) emulation: a known mode's static quantizer vs the traced one.

Under ``disable_jit`` every operation is dispatched (and, the first time per shape,
compiled) on its own, so the number of operations per PAK call sets the speed. A mode known
while tracing runs the per-mode static quantizer (``pak.known_mode``); this times it
against forcing the branch-free traced quantizer (every mode's arithmetic) on the same
model, inputs and modes, interleaved, first call (eager compiles included) and warm.

  python scripts/bench_op_by_op.py [--model digits_vit] [--out runs/bench/op_by_op.json]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from aprec import models  # noqa: E402
from aprec.app import tables  # noqa: E402
from aprec.emulator import Emulator, pak  # noqa: E402


def _run(emu, params, x, modes) -> float:
  start = time.perf_counter()
  with jax.disable_jit():
    jax.block_until_ready(emu(params, x, modes))
  return time.perf_counter() - start


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--model", default="digits_vit")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/bench/op_by_op.json"))
  args = ap.parse_args()
  model = models.load(args.model)
  x = model.data.test.x[:16]
  emu = Emulator(model.apply_fn, model.params, x)
  known = pak.known_mode
  variants = {"known": known, "traced": lambda mode: None}
  rows, result = [], {"model": args.model, "examples": 16, "rows": [], "ratios": {}}
  for mode in ("fp32", "int8"):
    modes = emu.assignment(mode)
    times = {name: [] for name in variants}
    for rep in range(args.repeats + 1):  # rep 0: the first call, eager compiles included
      for name, fn in variants.items():
        pak.known_mode = fn
        times[name].append(_run(emu, model.params, x, modes))
    pak.known_mode = known
    for name in variants:
      row = {
          "mode": mode,
          "quantizer": name,
          "first_call_s": times[name][0],
          "warm_s": float(np.median(times[name][1:])),
      }
      rows.append(row)
    ratio = float(np.median(times["known"][1:]) / np.median(times["traced"][1:]))
    result["ratios"][f"op_by_op_known_over_traced_{args.model}_{mode}"] = ratio
    result["ratios"][f"op_by_op_first_call_known_over_traced_{args.model}_{mode}"] = (
        times["known"][0] / times["traced"][0]
    )
  result["rows"] = rows
  tables.console().print(
      tables.rows_table(
          rows,
          title=f"{args.model} op by op, 16 examples",
          formats={"first_call_s": ".2f", "warm_s": ".3f"},
      )
  )
  for k, v in result["ratios"].items():
    print(f"{k}: {v:.3f}")
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(result, indent=1))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
