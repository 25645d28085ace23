"""Resource budgets for static plans, priced per (op, mode) in exact integer units.

A plan's use of each budget is a sum over ops of its (op, mode) cost (``cost_table``), so
planning under a budget is a multiple-choice knapsack (``aprec.planning.knapsack``).
Budgets (``parse_budget``):

- ``bits=B``: average bits per weight element, ``Σ w_i·bits_i / Σ w_i <= B`` (ops without a
  weight cost nothing);
- ``weight_bytes=N``: bytes of all weights in their modes, ``Σ w_i·bits_i / 8 <= N``;
- ``bops=N``: bit-operations per example, ``Σ MACs_i·bits_w·bits_a <= N``; a mode fixes
  both operands' format, so ``bits_w = bits_a = bits_i``;
- ``energy_j=E`` / ``latency_s=T``: energy / latency per example on an NNP spec
  (``Budget.spec_name``, default ``edge_npu``) under the cost model, on an idle chip. The
  cost model prices each op by its own mode only, so these add up over ops exactly like the
  others; they are counted in whole femtojoules / femtoseconds.

Example:
  >>> b = parse_budget("latency_s=1e-6@datacenter_gpu")
  >>> b.kind, b.value, b.spec_name, str(b)
  ('latency_s', 1e-06, 'datacenter_gpu', 'latency_s=1e-06@datacenter_gpu')
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from aprec.emulator.formats import MODE_BITS, N_MODES
from aprec.emulator.ops import Op

BUDGET_KINDS = ("bits", "weight_bytes", "bops", "energy_j", "latency_s")
_FEMTO = 1e15  # cost-model budgets are counted in femtojoules / femtoseconds


class InfeasibleBudget(ValueError):
  """No assignment of the allowed modes fits the budget."""


@dataclasses.dataclass(frozen=True)
class Budget:
  """A resource budget: ``kind`` in ``BUDGET_KINDS`` and its ``value`` (see module doc)."""

  kind: str
  value: float
  spec_name: Any = "edge_npu"  # a preset name, a JSON spec file, or an NNPSpec itself

  def __post_init__(self):
    if self.kind not in BUDGET_KINDS:
      raise ValueError(
          f"unknown budget kind {self.kind!r}; use one of {', '.join(BUDGET_KINDS)}"
          " (e.g. bits=4.5, weight_bytes=20000, bops=1e9)"
      )
    if not (isinstance(self.value, (int, float)) and math.isfinite(self.value) and self.value > 0):
      raise ValueError(f"budget {self.kind}={self.value!r} must be a positive finite number")

  def __str__(self) -> str:
    name = getattr(self.spec_name, "name", self.spec_name)  # an NNPSpec prints its name
    on = f"@{name}" if self.kind in ("energy_j", "latency_s") else ""
    return f"{self.kind}={self.value:g}{on}"


def parse_budget(text: str) -> Budget:
  """``"bits=4.5"``, ``"weight_bytes=20000"``, ``"bops=1e9"``, ``"energy_j=2e-9"`` or
  ``"latency_s=1e-6@datacenter_gpu"`` (``@SPEC`` picks the NNP preset) → ``Budget``.

  Example:
    >>> parse_budget("bits=4.5")
    Budget(kind='bits', value=4.5, spec_name='edge_npu')
  """
  text, _, spec_name = str(text).partition("@")
  kind, sep, value = text.partition("=")
  try:
    number = float(value)
  except ValueError:
    number = None
  if not sep or number is None:
    raise ValueError(
        f"cannot read budget {text!r}; write KIND=NUMBER with KIND one of "
        f"{', '.join(BUDGET_KINDS)}, e.g. bits=4.5"
    )
  if spec_name:
    from aprec.hardware import specs as hardware

    hardware.get_spec(spec_name.strip())  # unknown presets fail here, naming the known ones
    return Budget(kind.strip(), number, spec_name.strip())
  return Budget(kind.strip(), number)


def cost_table(ops: Sequence[Op], kind: str, spec_name: str = "edge_npu") -> np.ndarray:
  """Integer cost of every (op, mode): weight bits (``bits``/``weight_bytes``),
  bit-operations of one call (``bops``), or femtojoules / femtoseconds of one call on
  the NNP preset ``spec_name`` (``energy_j`` / ``latency_s``)."""
  Budget(kind, 1.0)
  if kind in ("energy_j", "latency_s"):
    return _cost_model_table(tuple(ops), kind, spec_name)
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
  columns = [
      np.asarray(
          getattr(
              cost.cost(arrays, cost.one_hot(np.full(len(ops), m, np.int32)), spec, state), field
          ),
          np.float64,
      )
      for m in range(N_MODES)
  ]
  return np.ceil(np.stack(columns, 1) * _FEMTO).astype(np.int64)


def units_per_budget_unit(ops: Sequence[Op], kind: str, batch_size: int) -> float:
  """Integer cost units (``cost_table``'s) per unit of the budget (per example)."""
  if kind == "bits":
    return float(sum(op.weight_elements for op in ops))
  if kind in ("energy_j", "latency_s"):
    return _FEMTO * batch_size
  return 8.0 if kind == "weight_bytes" else float(batch_size)


def budget_used(
    ops: Sequence[Op],
    assignment: Sequence[int],
    kind: str,
    batch_size: int = 1,
    spec_name: str = "edge_npu",
) -> float:
  """What ``assignment`` uses, in the budget's units (average bits, bytes, per-example
  BOPs, joules or seconds)."""
  costs = cost_table(ops, kind, spec_name)
  total = costs[np.arange(len(ops)), np.asarray(assignment)].sum()
  per_unit = units_per_budget_unit(ops, kind, batch_size)
  return float(total / per_unit) if per_unit else 0.0
