"""MiniLM-L6 under every uniform precision mode: docstring-task metrics and fidelity to fp32.

  python scripts/minilm_uniform_table.py [--split test] [--out runs/minilm/uniform.json]

For each activation scaling (per tensor, per token) and each mode of ``aprec.MODES``, every
op of the model runs in that mode; the split's texts are embedded and scored (recall@1,
recall@10, MRR of each summary's docstring body among the split's bodies) and compared with
the fp32 embeddings (mean cosine). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import aprec
from aprec import models
from aprec.emulator.pak import ActivationScaling
from aprec.emulator.retrieval_scoring import RetrievalEvaluator


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--split", default="test", choices=("calibration", "val", "test"))
  parser.add_argument("--scalings", nargs="+", default=[s.value for s in ActivationScaling])
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/minilm/uniform.json"))
  args = parser.parse_args()
  model = models.load("minilm_l6")
  split = getattr(model.data, args.split)
  rows = []
  for scaling in args.scalings:
    ev = RetrievalEvaluator(
        model.apply_fn, model.params, split, activation_scaling=ActivationScaling(scaling)
    )
    for mode in aprec.MODES:
      start = time.perf_counter()
      r = ev.measure(ev.emulator.assignment(mode))
      row = dict(
          mode=mode,
          activation_scaling=scaling,
          **r._asdict(),
          one_minus_cos=1.0 - r.mean_cosine,
          seconds=time.perf_counter() - start,
      )
      rows.append(row)
      print(
          f"{scaling:10s} {mode:9s} R@1 {r.recall_at_1:.4f}  R@10 {r.recall_at_10:.4f}  "
          f"MRR {r.mrr:.4f}  1-cos {1 - r.mean_cosine:.2e}  ({row['seconds']:.0f} s)",
          flush=True,
      )
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(
      json.dumps(
          {
              "model": "minilm_l6",
              "split": args.split,
              "num_pairs": split.num_pairs,
              "max_tokens": int(split.x[0].shape[1]),
              "rows": rows,
          },
          indent=1,
      )
      + "\n"
  )
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
