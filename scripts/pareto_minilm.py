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

Budgets: ``--budgets`` log-spaced ones plus each uniform mode's own cost. Checked: no
uniform mode dominates a plan, i.e. every planned point is at least as good (MRR, recall@1,
and the fidelity the plans optimise, mean cosine to fp32) as every uniform mode its budget
allowed (equal or lower cost:
``planning.dominated_by_uniform``); each violation is listed in the JSON and printed with
its gap and the gap's paired standard error over the 256 queries (one query moves recall@1
by 0.0039). Writes the JSON and a PNG (MRR vs bits and vs energy) beside it.
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
from aprec.emulator import retrieval_scoring as retrieval  # noqa: E402
from aprec.emulator.formats import MODES  # noqa: E402
from aprec.planning import planner  # noqa: E402
from aprec.planning.budgets import budget_used  # noqa: E402
from aprec.sensitivity import profile as profile_lib  # noqa: E402

METRICS = ("mrr", "recall_at_1", "mean_cosine")
KINDS = ("bits", "energy_j")


class Cached:
  """An evaluator that measures each distinct assignment once (uniform modes recur in both
  fronts) and keeps each query's rank, for paired standard errors."""

  def __init__(self, evaluator):
    self.emulator, self._evaluator = evaluator.emulator, evaluator
    self._seen: dict[bytes, tuple] = {}

  def _one(self, row: np.ndarray) -> tuple:
    key = row.tobytes()
    if key not in self._seen:
      ev = self._evaluator
      e = ev.embeddings(row)
      n = ev.split.num_pairs
      rank = retrieval.ranks(e[:n], e[n:])
      ref = ev.reference().astype(np.float64)
      e64 = e.astype(np.float64)
      cos = np.sum(e64 * ref, -1) / (np.linalg.norm(e64, axis=-1) * np.linalg.norm(ref, axis=-1))
      task = retrieval.metrics_from_ranks(rank)
      self._seen[key] = (retrieval.RetrievalMeasured(*task, float(np.mean(cos))), rank, cos)
    return self._seen[key]

  def measure(self, rows):
    each = [self._one(row)[0] for row in np.asarray(rows, np.int32)]
    return type(each[0])(*(np.array(column, np.float64) for column in zip(*each)))

  def per_query(self, modes: tuple[str, ...], metric: str) -> np.ndarray:
    """Each query's reciprocal rank (``mrr``) or hit at 1 (``recall_at_1``), or each text's
    cosine to fp32 (``mean_cosine``)."""
    _, rank, cos = self._one(np.array([MODES.index(m) for m in modes], np.int32))
    if metric == "mean_cosine":
      return cos
    return 1.0 / rank if metric == "mrr" else (rank <= 1).astype(np.float64)


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
    # Plans at every uniform mode's own cost too, so each uniform point has a plan beside it.
    budgets += [
        budget_used(prof.ops, np.full(len(prof.ops), m), kind, prof.batch_size, args.spec)
        for m in range(len(MODES))
    ]
    budgets = sorted(set(budgets))
    fronts[kind] = planner.pareto_front(
        prof, evaluator, kind=kind, budgets=budgets, spec_name=args.spec
    )
    violations[kind] = {m: planner.dominated_by_uniform(fronts[kind], m) for m in METRICS}
    for metric, found in violations[kind].items():
      by_label = {p.label: p for p in fronts[kind]}
      for v in found:  # paired over the same queries: is the gap more than noise?
        d = evaluator.per_query(by_label[v["uniform"]].modes, metric) - evaluator.per_query(
            by_label[v["plan"]].modes, metric
        )
        v["gap_stderr"] = float(d.std(ddof=1) / np.sqrt(len(d)))
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
      "n_violations_beyond_2_stderr": sum(
          v["gap"] > 2 * v["gap_stderr"] for k in violations.values() for f in k.values() for v in f
      ),
      "largest_gap_in_stderr": max(
          (
              v["gap"] / v["gap_stderr"]
              for k in violations.values()
              for f in k.values()
              for v in f
              if v["gap_stderr"] > 0
          ),
          default=0.0,
      ),
      "figure": figure.name,
      "seconds": time.perf_counter() - start,
  }
  args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
  print(
      f"{result['n_violations']} violation(s), {result['n_violations_beyond_2_stderr']} beyond "
      f"2 paired standard errors (largest: {result['largest_gap_in_stderr']:.2f}); wrote "
      f"{args.out} and {figure}"
  )


if __name__ == "__main__":
  main()
