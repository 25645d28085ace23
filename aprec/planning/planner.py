"""Static mixed-precision plans: least predicted Δloss under a resource budget.

Under the additive model (a plan's Δloss is the sum of its ops' profile entries), choosing
one mode per op under a budget is a multiple-choice knapsack. ``solve`` finds the optimum
exactly by dynamic programming over integer costs; ``plan`` turns a budget into those
costs. Budgets (``parse_budget``):

- ``bits=B``: average bits per weight element, ``Σ w_i·bits_i / Σ w_i <= B`` (ops without a
  weight cost nothing);
- ``weight_bytes=N``: bytes of all weights in their modes, ``Σ w_i·bits_i / 8 <= N``;
- ``bops=N``: bit-operations per example, ``Σ MACs_i·bits_w·bits_a <= N``; a mode fixes
  both operands' format, so ``bits_w = bits_a = bits_i``;
- ``energy_j=E`` / ``latency_s=T``: energy / latency per example on an NNP spec
  (``Budget.spec``, default ``edge_npu``) under the cost model, on an idle chip. The cost
  model prices each op by its own mode only, so these add up over ops exactly like the
  others; they are counted in whole femtojoules / femtoseconds.

Costs are whole bits (or bit-operations), reduced by their greatest common divisor, so the
DP is exact. Only if the budget still spans more than ``max_units`` steps are costs
rounded *up* to a coarser grid: the plan stays within budget, ``Plan.exact`` is False.

Example:
  >>> import numpy as np
  >>> values = np.array([[0.0, 1.0], [0.0, 5.0]])   # Δloss of (op, mode)
  >>> costs = np.array([[8, 4], [8, 4]])
  >>> solve(values, costs, capacity=12).tolist()    # cheapen the op that suffers least
  [1, 0]
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from aprec.emulator.formats import MODE_BITS, MODES, mode_index
from aprec.emulator.ops import Op
from aprec.sensitivity.profile import SensitivityProfile, check_matches

BUDGET_KINDS = ("bits", "weight_bytes", "bops", "energy_j", "latency_s")
_FEMTO = 1e15  # cost-model budgets are counted in femtojoules / femtoseconds
MAX_UNITS = 200_000


class InfeasibleBudget(ValueError):
  """No assignment of the allowed modes fits the budget."""


@dataclasses.dataclass(frozen=True)
class Budget:
  """A resource budget: ``kind`` in ``BUDGET_KINDS`` and its ``value`` (see module doc)."""

  kind: str
  value: float
  spec: str = "edge_npu"

  def __post_init__(self):
    if self.kind not in BUDGET_KINDS:
      raise ValueError(f"unknown budget kind {self.kind!r}; use one of {', '.join(BUDGET_KINDS)}"
                       " (e.g. bits=4.5, weight_bytes=20000, bops=1e9)")
    if not (isinstance(self.value, (int, float)) and math.isfinite(self.value)
            and self.value > 0):
      raise ValueError(f"budget {self.kind}={self.value!r} must be a positive finite number")

  def __str__(self) -> str:
    on = f"@{self.spec}" if self.kind in ("energy_j", "latency_s") else ""
    return f"{self.kind}={self.value:g}{on}"


def parse_budget(text: str) -> Budget:
  """``"bits=4.5"``, ``"weight_bytes=20000"``, ``"bops=1e9"``, ``"energy_j=2e-9"`` or
  ``"latency_s=1e-6@datacenter_gpu"`` (``@SPEC`` picks the NNP preset) → ``Budget``.

  Example:
    >>> parse_budget("bits=4.5")
    Budget(kind='bits', value=4.5, spec='edge_npu')
  """
  text, _, spec = str(text).partition("@")
  kind, sep, value = text.partition("=")
  try:
    number = float(value)
  except ValueError:
    number = None
  if not sep or number is None:
    raise ValueError(f"cannot read budget {text!r}; write KIND=NUMBER with KIND one of "
                     f"{', '.join(BUDGET_KINDS)}, e.g. bits=4.5")
  if spec:
    from aprec.hardware import specs as hardware
    hardware.get_spec(spec.strip())  # unknown presets fail here, naming the known ones
    return Budget(kind.strip(), number, spec.strip())
  return Budget(kind.strip(), number)


def cost_table(ops: Sequence[Op], kind: str, spec: str = "edge_npu") -> np.ndarray:
  """Integer cost of every (op, mode): weight bits (``bits``/``weight_bytes``),
  bit-operations of one call (``bops``), or femtojoules / femtoseconds of one call on
  ``spec`` (``energy_j`` / ``latency_s``)."""
  Budget(kind, 1.0)
  if kind in ("energy_j", "latency_s"):
    return _cost_model_table(tuple(ops), kind, spec)
  bits = MODE_BITS.astype(np.int64)
  if kind == "bops":
    return np.array([op.macs * bits * bits for op in ops], np.int64).reshape(len(ops), -1)
  return np.array([op.weight_elements * bits for op in ops], np.int64).reshape(len(ops), -1)


def _cost_model_table(ops: tuple[Op, ...], kind: str, spec_name: str) -> np.ndarray:
  from aprec.hardware import cost
  from aprec.hardware import specs as hardware
  spec = hardware.get_spec(spec_name)
  arrays, state = cost.op_arrays(ops), cost.nominal_state(spec)
  field = "op_energy_j" if kind == "energy_j" else "op_latency_s"
  columns = [np.asarray(getattr(cost.cost(arrays, cost.one_hot(np.full(len(ops), m, np.int32)),
                                          spec, state), field), np.float64)
             for m in range(len(MODES))]
  return np.ceil(np.stack(columns, 1) * _FEMTO).astype(np.int64)


def _scale(ops: Sequence[Op], kind: str, batch_size: int) -> float:
  """Cost units per budget unit."""
  if kind == "bits":
    return float(sum(op.weight_elements for op in ops))
  if kind in ("energy_j", "latency_s"):
    return _FEMTO * batch_size
  return 8.0 if kind == "weight_bytes" else float(batch_size)


def budget_used(ops: Sequence[Op], assignment: Sequence[int], kind: str,
                batch_size: int = 1, spec: str = "edge_npu") -> float:
  """What ``assignment`` uses, in the budget's units (average bits, bytes, per-example
  BOPs, joules or seconds)."""
  costs = cost_table(ops, kind, spec)
  total = costs[np.arange(len(ops)), np.asarray(assignment)].sum()
  scale = _scale(ops, kind, batch_size)
  return float(total / scale) if scale else 0.0


def solve(values: np.ndarray, costs: np.ndarray, capacity: int) -> np.ndarray:
  """The exact multiple-choice knapsack: one mode per op, least total value, cost <= capacity.

  Args:
    values: ``(n_ops, n_modes)``; ``inf`` marks a mode that may not be chosen.
    costs: ``(n_ops, n_modes)`` non-negative integers.
    capacity: the integer budget.

  Returns:
    The chosen mode per op (ties go to the lower mode index, i.e. more precision).

  Raises:
    InfeasibleBudget: no choice fits.
  """
  values = np.asarray(values, np.float64)
  costs = np.asarray(costs, np.int64)
  if values.shape != costs.shape or values.ndim != 2:
    raise ValueError(f"values and costs must be equal (n_ops, n_modes) arrays, got "
                     f"{values.shape} and {costs.shape}")
  if np.isnan(values).any() or (costs < 0).any():
    raise ValueError("values must not be NaN and costs must be non-negative")
  capacity = int(capacity)
  if capacity < 0:
    raise InfeasibleBudget(f"capacity {capacity} is negative")
  best = np.zeros(capacity + 1)
  choice = np.zeros((len(values), capacity + 1), np.int16)
  for i in range(len(values)):
    new = np.full(capacity + 1, np.inf)
    for m in range(values.shape[1]):
      c = int(costs[i, m])
      if not np.isfinite(values[i, m]) or c > capacity:
        continue
      cand = np.full(capacity + 1, np.inf)
      cand[c:] = best[:capacity + 1 - c] + values[i, m]
      better = cand < new
      new[better] = cand[better]
      choice[i, better] = m
    best = new
  if not np.isfinite(best[capacity]):
    raise InfeasibleBudget("no assignment of the allowed modes fits the budget")
  out = np.zeros(len(values), np.int32)
  c = capacity
  for i in reversed(range(len(values))):
    out[i] = choice[i, c]
    c -= int(costs[i, out[i]])
  return out


def brute_force(values: np.ndarray, costs: np.ndarray, capacity: int) -> np.ndarray:
  """``solve`` by enumerating every assignment (for checking; exponential in ops)."""
  values, costs = np.asarray(values, np.float64), np.asarray(costs, np.int64)
  n_ops, n_modes = values.shape
  best, best_value = None, np.inf
  for combo in itertools.product(range(n_modes), repeat=n_ops):
    idx = (np.arange(n_ops), np.array(combo))
    total = values[idx].sum()
    if costs[idx].sum() <= capacity and total < best_value:
      best, best_value = np.array(combo, np.int32), total
  if best is None:
    raise InfeasibleBudget("no assignment of the allowed modes fits the budget")
  return best


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
    return {"budget": str(self.budget), "used": self.used,
            "predicted_delta_loss": self.predicted_delta_loss, "exact": self.exact,
            "modes": dict(zip(op_names, self.modes))}


def plan(profile: SensitivityProfile, budget: Budget | str, *, method: str | None = None,
         allowed_modes: Sequence[str] | None = None, max_units: int = MAX_UNITS) -> Plan:
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
  allowed = (list(range(len(MODES))) if allowed_modes is None
             else [mode_index(m) for m in allowed_modes])
  if not allowed:
    raise ValueError("allowed_modes is empty; allow at least one mode")
  values[:, [m for m in range(len(MODES)) if m not in allowed]] = np.inf
  values[np.isnan(values)] = np.inf
  costs = cost_table(profile.ops, budget.kind, budget.spec)
  capacity = budget.value * _scale(profile.ops, budget.kind, profile.batch_size)
  cheapest = costs[:, allowed].min(1).sum()
  if cheapest > capacity * (1 + 1e-12):
    least = cheapest / _scale(profile.ops, budget.kind, profile.batch_size)
    raise InfeasibleBudget(
        f"budget {budget} is infeasible: the cheapest assignment of the allowed modes "
        f"({', '.join(MODES[m] for m in allowed)}) needs {budget.kind}={least:.6g}; "
        "raise the budget or allow cheaper modes")
  finite = costs[np.isfinite(values)]
  g = int(np.gcd.reduce(finite[finite > 0])) if (finite > 0).any() else 1
  units = np.ceil(costs / g).astype(np.int64)
  cap_units = int(math.floor(capacity / g + 1e-9))
  exact = cap_units <= max_units
  if not exact:
    step = cap_units / max_units
    units = np.ceil(costs / (g * step)).astype(np.int64)
    cap_units = max_units
  assignment = solve(values, units, cap_units)
  predicted = float(values[np.arange(len(assignment)), assignment].sum())
  return Plan(assignment=assignment, modes=tuple(MODES[m] for m in assignment),
              predicted_delta_loss=predicted, budget=budget,
              used=budget_used(profile.ops, assignment, budget.kind, profile.batch_size,
                               budget.spec),
              exact=exact)


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
      cross-entropy increase over fp32.
    modes: mode per op.
  """

  label: str
  kind: str
  used: float
  predicted_delta_loss: float
  measured_delta_loss: float
  measured_accuracy: float
  measured_ce_delta: float
  modes: tuple[str, ...]


def default_budgets(profile: SensitivityProfile, kind: str, n: int = 12) -> list[float]:
  """``n`` budgets from the cheapest to the dearest uniform assignment."""
  lo = budget_used(profile.ops, np.full(len(profile.ops), mode_index("int4")), kind,
                   profile.batch_size)
  hi = budget_used(profile.ops, np.zeros(len(profile.ops), np.int32), kind, profile.batch_size)
  return [float(v) for v in np.geomspace(lo, hi, n)]


def pareto_front(profile: SensitivityProfile, evaluator: Any, *, kind: str = "bits",
                 budgets: Sequence[float] | None = None, method: str | None = None,
                 delta_fn: Callable[[np.ndarray], np.ndarray] | None = None
                 ) -> list[FrontPoint]:
  """Planned mixed assignments at each budget and every uniform one, measured together.

  Args:
    profile: the profile to plan with.
    evaluator: an ``aprec.emulator.scoring.Evaluator`` of the same model (held-out split).
    kind: the budget kind.
    budgets: budget values (default ``default_budgets``).
    method: the profile table to plan with.
    delta_fn: assignments ``(n, n_ops)`` → measured Δ of the profile's loss, e.g. from
      ``validation.measure_assignments``.

  Returns:
    Uniform points (one per mode) then mixed points, measured in one compiled call.
  """
  check_matches(profile, evaluator.emulator.ops)
  budgets = default_budgets(profile, kind) if budgets is None else list(budgets)
  plans = [plan(profile, Budget(kind, b), method=method) for b in budgets]
  table = profile.table(method)
  n_ops = len(profile.ops)
  uniform = [np.full(n_ops, m, np.int32) for m in range(len(MODES))]
  rows = np.stack(uniform + [p.assignment for p in plans])
  measured = evaluator.measure(rows)
  base = measured.loss[0]
  deltas = np.full(len(rows), np.nan) if delta_fn is None else np.asarray(delta_fn(rows))
  points = []
  for r, row in enumerate(rows):
    is_uniform = r < len(uniform)
    points.append(FrontPoint(
        label=MODES[r] if is_uniform else str(plans[r - len(uniform)].budget),
        kind="uniform" if is_uniform else "mixed",
        used=budget_used(profile.ops, row, kind, profile.batch_size),
        predicted_delta_loss=float(table[np.arange(n_ops), row].sum()),
        measured_delta_loss=float(deltas[r]),
        measured_accuracy=float(measured.accuracy[r]),
        measured_ce_delta=float(measured.loss[r] - base),
        modes=tuple(MODES[m] for m in row)))
  return points
