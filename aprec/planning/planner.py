"""Static mixed-precision plans: least predicted Δloss under a resource budget.

Under the additive model (a plan's Δloss is the sum of its ops' profile entries), choosing
one mode per op under a budget (``aprec.planning.budgets``) is a multiple-choice knapsack,
solved exactly by ``aprec.planning.knapsack.solve`` (in float64).

Costs are whole bits (or bit-operations, femtojoules, femtoseconds), reduced by their
greatest common divisor, so the DP is exact. Only if the budget still spans more than
``max_units`` steps are costs rounded *up* to a coarser grid: the plan stays within
budget, ``Plan.exact`` is False.

Example:
  >>> import numpy as np
  >>> from aprec.emulator.ops import Op
  >>> from aprec.sensitivity.profile import Estimate, make_profile
  >>> ops = [Op(name=n, kind="dot_general", lhs_shape=(1, 4), rhs_shape=(4, 4),
  ...           out_shape=(1, 4), weight_operand=1, macs=16, contraction_size=4)
  ...        for n in ("a", "b")]
  >>> dl = np.array([[0, 2e-6, 1e-6, 1e-3, 3e-3, 1e-4, 2e-2],    # Δloss of (op, mode)
  ...                [0, 2e-6, 1e-6, 5e-3, 9e-3, 5e-4, 9e-2]])
  >>> est = Estimate(delta_loss=dl, stderr=0 * dl, n_samples=1)
  >>> profile = make_profile(model="toy", ops=ops, estimates={"perturbation": est},
  ...                        dataset="toy", n_batches=1, batch_size=1, baseline_loss=0.1)
  >>> plan(profile, "bits=12").modes                # cheapen the op that suffers least
  ('int8', 'fp16')
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from aprec.emulator.formats import MODES, N_MODES, mode_index
from aprec.planning import knapsack
from aprec.planning.budgets import (
    Budget,
    InfeasibleBudget,
    budget_used,
    cost_table,
    parse_budget,
    units_per_budget_unit,
)
from aprec.sensitivity.profile import SensitivityProfile, check_matches

MAX_UNITS = 200_000


def solve(values: np.ndarray, costs: np.ndarray, capacity: int) -> np.ndarray:
  """``knapsack.solve`` for one budget, exact in float64; ``inf`` values are ruled out.

  Raises:
    InfeasibleBudget: no choice of the allowed modes fits ``capacity``.
  """
  values = np.asarray(values, np.float64)
  costs = np.asarray(costs, np.int64)
  if values.shape != costs.shape or values.ndim != 2:
    raise ValueError(
        f"values and costs must be equal (n_ops, n_modes) arrays, got "
        f"{values.shape} and {costs.shape}"
    )
  if np.isnan(values).any() or (costs < 0).any():
    raise ValueError("values must not be NaN and costs must be non-negative")
  capacity = int(capacity)
  if capacity < 0:
    raise InfeasibleBudget(f"capacity {capacity} is negative")
  allowed = np.isfinite(values)
  grid = 1 << max(4, capacity.bit_length())  # few table sizes, so few compilations
  with jax.enable_x64(True):
    modes, feasible = knapsack.solve(
        np.where(allowed, values, 0.0),
        np.minimum(costs, grid + 1)[None],
        np.array([capacity]),
        grid=(grid,),
        allowed=allowed,
    )
    modes, feasible = np.asarray(modes, np.int32), bool(feasible)
  if not feasible:
    raise InfeasibleBudget("no assignment of the allowed modes fits the budget")
  return modes


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Plan:
  """A planned assignment.

  Attributes:
    assignment: int32 mode index per op.
    modes: the mode names, per op.
    predicted_delta_loss: the profile's Δloss summed over ops.
    budget: the budget it was planned for.
    used: what it uses, in the budget's units.
    exact: False when costs had to be rounded up to a coarser grid (still within budget).
  """

  assignment: np.ndarray
  modes: tuple[str, ...]
  predicted_delta_loss: float
  budget: Budget
  used: float
  exact: bool

  def to_dict(self, op_names: Sequence[str]) -> dict[str, Any]:
    return {
        "budget": str(self.budget),
        "used": self.used,
        "predicted_delta_loss": self.predicted_delta_loss,
        "exact": self.exact,
        "modes": dict(zip(op_names, self.modes)),
    }


def plan(
    profile: SensitivityProfile,
    budget: Budget | str,
    *,
    method: str | None = None,
    allowed_modes: Sequence[str] | None = None,
    max_units: int = MAX_UNITS,
) -> Plan:
  """The assignment with the least predicted Δloss within ``budget``.

  Args:
    profile: the sensitivity profile (its ops' weights and MACs price the modes).
    budget: a ``Budget`` or its text form (``"bits=4.5"``).
    method: which of the profile's tables to minimise (default: its primary method).
    allowed_modes: restrict the choice (default: every mode).
    max_units: the finest budget grid the DP will use.

  Raises:
    InfeasibleBudget: even the cheapest allowed assignment exceeds the budget.
  """
  budget = parse_budget(budget) if isinstance(budget, str) else budget
  values = np.array(profile.table(method), np.float64)
  allowed = (
      list(range(N_MODES)) if allowed_modes is None else [mode_index(m) for m in allowed_modes]
  )
  if not allowed:
    raise ValueError("allowed_modes is empty; allow at least one mode")
  values[:, [m for m in range(N_MODES) if m not in allowed]] = np.inf
  values[np.isnan(values)] = np.inf
  costs = cost_table(profile.ops, budget.kind, budget.spec_name)
  capacity = budget.value * units_per_budget_unit(profile.ops, budget.kind, profile.batch_size)
  cheapest = costs[:, allowed].min(1).sum()
  if cheapest > capacity * (1 + 1e-12):
    least = cheapest / units_per_budget_unit(profile.ops, budget.kind, profile.batch_size)
    raise InfeasibleBudget(
        f"budget {budget} is infeasible: the cheapest assignment of the allowed modes "
        f"({', '.join(MODES[m] for m in allowed)}) needs {budget.kind}={least:.6g}; "
        "raise the budget or allow cheaper modes"
    )
  finite = costs[np.isfinite(values)]
  g = int(np.gcd.reduce(finite[finite > 0])) if (finite > 0).any() else 1
  units = np.ceil(costs / g).astype(np.int64)
  cap_units = int(math.floor(capacity / g + 1e-9))
  exact = cap_units <= max_units
  if not exact:
    step = cap_units / max_units
    units = np.ceil(costs / (g * step)).astype(np.int64)
    cap_units = max_units
  try:
    assignment = solve(values, units, cap_units)
  except InfeasibleBudget:
    if exact:
      raise
    # Rounding costs up moved the budget below the cheapest assignment, which fits it
    # (checked above): the budget is within a grid step per op of it, so take it (ties
    # broken by the least Δloss).
    cost = np.where(np.isfinite(values), costs, np.iinfo(np.int64).max)
    least = cost == cost.min(1, keepdims=True)
    assignment = np.argmin(np.where(least, values, np.inf), axis=1).astype(np.int32)
  predicted = float(values[np.arange(len(assignment)), assignment].sum())
  return Plan(
      assignment=assignment,
      modes=tuple(MODES[m] for m in assignment),
      predicted_delta_loss=predicted,
      budget=budget,
      used=budget_used(profile.ops, assignment, budget.kind, profile.batch_size, budget.spec_name),
      exact=exact,
  )


# --------------------------------------------------------------------------------------
# The Pareto front: planned mixed assignments beside uniform ones, measured.


@dataclasses.dataclass(frozen=True, kw_only=True)
class FrontPoint:
  """One plan of the front.

  Attributes:
    label: the mode (uniform) or the budget (mixed).
    kind: ``"mixed"`` or ``"uniform"``.
    used: budget use, in the budget's units.
    predicted_delta_loss: the profile's summed Δloss.
    measured_delta_loss: measured Δ of the profile's loss (NaN without ``delta_fn``).
    measured_accuracy, measured_ce_delta: the evaluator's accuracy and label
      cross-entropy increase over fp32 (NaN for an evaluator without them).
    modes: mode per op.
    metrics: every field the evaluator measured (``accuracy``, ``loss``; a retrieval
      evaluator's ``recall_at_1``, ``recall_at_10``, ``mrr``, ``mean_cosine``).
  """

  label: str
  kind: str
  used: float
  predicted_delta_loss: float
  measured_delta_loss: float
  measured_accuracy: float
  measured_ce_delta: float
  modes: tuple[str, ...]
  metrics: dict[str, float] = dataclasses.field(default_factory=dict)


def default_budgets(
    profile: SensitivityProfile, kind: str, n: int = 12, spec_name: Any = "edge_npu"
) -> list[float]:
  """``n`` budgets from the cheapest to the dearest uniform assignment (energy and latency
  priced on ``spec_name``: a preset name, a JSON spec file or an ``NNPSpec``)."""
  lo = budget_used(
      profile.ops,
      np.full(len(profile.ops), mode_index("int4")),
      kind,
      profile.batch_size,
      spec_name,
  )
  hi = budget_used(
      profile.ops, np.zeros(len(profile.ops), np.int32), kind, profile.batch_size, spec_name
  )
  return [float(v) for v in np.geomspace(lo, hi, n)]


def pareto_front(
    profile: SensitivityProfile,
    evaluator: Any,
    *,
    kind: str = "bits",
    budgets: Sequence[float] | None = None,
    method: str | None = None,
    delta_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    spec_name: Any = "edge_npu",
) -> list[FrontPoint]:
  """Planned mixed assignments at each budget and every uniform one, measured together.

  Args:
    profile: the profile to plan with.
    evaluator: an evaluator of the same model on held-out data whose ``measure(rows)``
      gives per-row metrics (``aprec.emulator.scoring.Evaluator``: accuracy and loss;
      ``aprec.emulator.retrieval_scoring.RetrievalEvaluator``: recall@k, MRR, mean cosine).
    kind: the budget kind.
    budgets: budget values (default ``default_budgets``).
    method: the profile table to plan with.
    delta_fn: assignments ``(n, n_ops)`` → measured Δ of the profile's loss, e.g. from
      ``validation.measure_assignments``.
    spec_name: the NNP spec pricing ``energy_j`` / ``latency_s`` budgets.

  Returns:
    Uniform points (one per mode) then mixed points.
  """
  check_matches(profile, evaluator.emulator.ops)
  if budgets is None:
    budgets = default_budgets(profile, kind, spec_name=spec_name)
  plans = [plan(profile, Budget(kind, b, spec_name), method=method) for b in budgets]
  table = profile.table(method)
  n_ops = len(profile.ops)
  uniform = [np.full(n_ops, m, np.int32) for m in range(N_MODES)]
  rows = np.stack(uniform + [p.assignment for p in plans])
  measured = evaluator.measure(rows)._asdict()
  nan = np.full(len(rows), np.nan)
  accuracy = np.asarray(measured.get("accuracy", nan))
  ce_delta = np.asarray(measured["loss"]) - measured["loss"][0] if "loss" in measured else nan
  deltas = nan if delta_fn is None else np.asarray(delta_fn(rows))
  points = []
  for r, row in enumerate(rows):
    is_uniform = r < len(uniform)
    points.append(
        FrontPoint(
            label=MODES[r] if is_uniform else str(plans[r - len(uniform)].budget),
            kind="uniform" if is_uniform else "mixed",
            used=budget_used(profile.ops, row, kind, profile.batch_size, spec_name),
            predicted_delta_loss=float(table[np.arange(n_ops), row].sum()),
            measured_delta_loss=float(deltas[r]),
            measured_accuracy=float(accuracy[r]),
            measured_ce_delta=float(ce_delta[r]),
            modes=tuple(MODES[m] for m in row),
            metrics={k: float(np.asarray(v)[r]) for k, v in measured.items()},
        )
    )
  return points


def dominated_by_uniform(points: Sequence[FrontPoint], metric: str) -> list[dict[str, Any]]:
  """Planned points a uniform mode dominates: it costs no more (``used``) and measures a
  higher ``metric``. Each violation with both labels, costs and metrics; empty when every
  plan is at least as good as every uniform mode its budget allowed (those of equal or
  lower cost), i.e. no uniform point lies above the planned front.

  Example:
    >>> u = FrontPoint(label="int8", kind="uniform", used=8.0, predicted_delta_loss=0.0,
    ...                measured_delta_loss=0.0, measured_accuracy=0.9, measured_ce_delta=0.0,
    ...                modes=(), metrics={"mrr": 0.9})
    >>> m = dataclasses.replace(u, label="bits=9", kind="mixed", used=9.0, metrics={"mrr": 0.8})
    >>> [v["uniform"] for v in dominated_by_uniform([u, m], "mrr")]
    ['int8']
  """
  uniform = [p for p in points if p.kind == "uniform"]
  found = []
  for p in points:
    if p.kind != "mixed":
      continue
    for u in uniform:
      if u.used <= p.used * (1 + 1e-12) and u.metrics[metric] > p.metrics[metric]:
        found.append(
            {
                "plan": p.label,
                "plan_used": p.used,
                f"plan_{metric}": p.metrics[metric],
                "uniform": u.label,
                "uniform_used": u.used,
                f"uniform_{metric}": u.metrics[metric],
                "gap": u.metrics[metric] - p.metrics[metric],
            }
        )
  return found
