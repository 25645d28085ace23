"""The adaptation study's numbers over seeds: gain recovered, intervals, mode shares.

Example:
  >>> gain_recovered(0.5, 0.25, 0.75)
  0.5
  >>> mean_ci([1.0, 2.0, 3.0])[0]
  2.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
  from aprec.rpm.study import SeedResult


def gain_recovered(q_learned: float, q_static: float, q_hindsight: float) -> float:
  """``(q_learned - q_static) / (q_hindsight - q_static)`` (NaN when the gap is 0)."""
  gap = q_hindsight - q_static
  return float((q_learned - q_static) / gap) if gap != 0 else float("nan")


_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
  """Mean and the half-width of its 95 % Student-t interval (NaN for one value)."""
  v = np.asarray(values, np.float64)
  if len(v) < 2:
    return float(np.mean(v)), float("nan")
  t = _T975.get(len(v) - 1, 1.96)
  return float(np.mean(v)), float(t * np.std(v, ddof=1) / math.sqrt(len(v)))


def stderr(values: Sequence[float]) -> float:
  """Standard error of the mean."""
  v = np.asarray(values, np.float64)
  return float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


ROW_FIELDS = (
    "quality",
    "violation_frac",
    "power_violation_frac",
    "deadline_miss_frac",
    "buffer_violation_frac",
    "energy_per_inference_j",
    "switches_per_step",
    "distinct_assignments",
    "fallback_frac",
)


def _layer(op_name: str) -> str:
  parts = op_name.split("/")
  return f"layer_{parts[1]}" if len(parts) > 1 and parts[0] == "layers" else parts[0]


def mode_share_by_layer(assignments: np.ndarray, op_names: Sequence[str]) -> dict:
  """``{layer: {mode: share of (step, op) entries}}`` of a policy's assignments."""
  from aprec.emulator.formats import MODES

  a = np.asarray(assignments)
  out: dict[str, dict[str, float]] = {}
  for layer in dict.fromkeys(_layer(n) for n in op_names):
    cols = [i for i, n in enumerate(op_names) if _layer(n) == layer]
    counts = np.bincount(a[:, cols].ravel(), minlength=len(MODES)) / a[:, cols].size
    out[layer] = {MODES[m]: round(float(c), 4) for m, c in enumerate(counts) if c > 0}
  return out


def summarize_seeds(results: Sequence[SeedResult], op_names: Sequence[str]) -> dict:
  """The study's numbers over seeds: mean rows per policy and the headline ratios."""
  names = [r["policy"] for r in results[0].rows]
  by = lambda res: {r["policy"]: r for r in res.rows}
  rows = []
  for name in names:
    per = [by(res)[name] for res in results]
    row = {"policy": name, "accuracy": None}
    row.update({k: float(np.mean([p[k] for p in per])) for k in ROW_FIELDS})
    row["quality_ci"] = mean_ci([p["quality"] for p in per])[1]
    row["decision_us"] = float(per[0].get("decision_us", float("nan")))
    rows.append(row)
  q = {n: np.array([by(res)[n]["quality"] for res in results]) for n in names}
  v = {n: np.array([by(res)[n]["violation_frac"] for res in results]) for n in names}
  gains = [
      gain_recovered(*(q[n][i] for n in ("learned", "static*", "hindsight")))
      for i in range(len(results))
  ]
  gain, gain_ci = mean_ci(gains)
  gap = q["hindsight"] - q["static*"]
  learned_all = np.concatenate([np.asarray(res.traces["learned"].assignments) for res in results])
  return {
      "rows": rows,
      "gain_recovered": gain,
      "gain_recovered_ci": gain_ci,
      "gain_recovered_per_seed": [float(g) for g in gains],
      "static_star_gap": float(np.mean(gap)),
      "static_star_gap_se": float(np.mean(gap) / stderr(gap)) if stderr(gap) > 0 else float("inf"),
      "violations": float(np.mean(v["learned"]) - np.mean(v["oracle"])),
      "learned_over_lookup": float(np.mean(q["learned"]) / np.mean(q["lookup"])),
      "beats_hindsight": sorted(
          {n for n in names if n != "hindsight" and np.any(q[n] > q["hindsight"] + 1e-12)}
      ),
      "hindsight_exact": all(res.hindsight_exact for res in results),
      "learned_distinct_assignments": int(len(np.unique(learned_all, axis=0))),
      "learned_mode_share_by_layer": mode_share_by_layer(learned_all, op_names),
  }
