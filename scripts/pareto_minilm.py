"""MiniLM-L6: planned mixed-precision assignments against uniform modes, measured on the task.

  python scripts/pareto_minilm.py [--budgets 10] [--spec edge_npu]
                                  [--out runs/minilm/pareto.json]

With the shipped ``minilm_l6`` profile (``checkpoints/minilm_l6/profile``: Δloss = 1 - cos
to the fp32 embeddings), the planner (``aprec.planning``) picks one mode per op at
``--budgets`` budgets between uniform int4 and uniform fp32, in two currencies: average bits
per weight, and energy per text on an NNP spec preset (``aprec.hardware`` cost model, idle
chip). Every planned assignment and every uniform mode is measured on the docstring task's
whole test split (256 summary -> body retrievals among 256 bodies; per-token activation
scales, as the profile): MRR, recall@1, recall@10 and the mean cosine to fp32.

Checked: every planned point is at least as good (MRR and recall@1) as every uniform mode of
equal or higher cost (``planning.dominated_by_uniform``); violations are listed in the
JSON and printed. Writes the JSON and a PNG (MRR vs bits and vs energy) beside it.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

_REPO = pathlib.Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
  sys.path.insert(0, str(_REPO))

import numpy as np  # noqa: E402

from aprec import models  # noqa: E402
from aprec.app import figures  # noqa: E402
from aprec.app.cmd_sensitivity import front_evaluator  # noqa: E402
from aprec.app.inputs import default_profile_dir  # noqa: E402
from aprec.planning import planner  # noqa: E402
from aprec.sensitivity import profile as profile_lib  # noqa: E402

METRICS = ("mrr", "recall_at_1")
KINDS = ("bits", "energy_j")


class Cached:
  """An evaluator that measures each distinct assignment once (uniform modes recur per front)."""

  def __init__(self, evaluator):
    self.emulator, self._evaluator, self._seen = evaluator.emulator, evaluator, {}

  def measure(self, rows):
    rows = np.asarray(rows, np.int32)
    for row in rows:
      if row.tobytes() not in self._seen:
        self._seen[row.tobytes()] = self._evaluator.measure(row)
    each = [self._seen[row.tobytes()] for row in rows]
    return type(each[0])(*(np.array(column, np.float64) for column in zip(*each)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--budgets", type=int, default=10, help="planned budgets per currency")
  parser.add_argument("--spec", default="edge_npu", help="NNP spec preset pricing energy")
  parser.add_argument("--out", type=pathlib.Path, default=_REPO / "runs/minilm/pareto.json")
  args = parser.parse_args()
  start = time.perf_counter()
  model = models.load("minilm_l6")
  evaluator = Cached(front_evaluator(model, "test"))
  prof = profile_lib.load(
      default_profile_dir("minilm_l6"), expect=evaluator.emulator.ops, params=model.params
  )
  fronts, violations = {}, {}
  for kind in KINDS:
    budgets = planner.default_budgets(prof, kind, args.budgets, spec_name=args.spec)
    fronts[kind] = planner.pareto_front(
        prof, evaluator, kind=kind, budgets=budgets, spec_name=args.spec
    )
    violations[kind] = {m: planner.dominated_by_uniform(fronts[kind], m) for m in METRICS}
    print(f"{kind} (on {args.spec})" if kind == "energy_j" else kind)
    for p in sorted(fronts[kind], key=lambda p: p.used):
      print(
          f"  {p.kind:7s} {p.label:28s} used {p.used:10.4g}  MRR {p.metrics['mrr']:.4f}  "
          f"R@1 {p.metrics['recall_at_1']:.4f}  1-cos {1 - p.metrics['mean_cosine']:.2e}  "
          f"predicted Δ {p.predicted_delta_loss:.2e}"
      )
    for m in METRICS:
      for v in violations[kind][m]:
        print(f"  VIOLATION ({m}): {v}")
  args.out.parent.mkdir(parents=True, exist_ok=True)
  figure = figures.pareto_fronts(
      fronts, args.out.with_suffix(".png"), model="minilm_l6 (docstring test split)", metric="mrr"
  )
  result = {
      "model": "minilm_l6",
      "profile": prof.dataset,
      "split": "test",
      "num_pairs": model.data.test.num_pairs,
      "spec": args.spec,
      "activation_scaling": evaluator.emulator.activation_scaling.value,
      "fronts": {kind: [vars(p) for p in points] for kind, points in fronts.items()},
      "violations": violations,
      "n_violations": sum(len(v) for k in violations.values() for v in k.values()),
      "figure": figure.name,
      "seconds": time.perf_counter() - start,
  }
  args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
  print(f"{result['n_violations']} violation(s); wrote {args.out} and {figure}")


if __name__ == "__main__":
  main()
