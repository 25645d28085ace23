import itertools
import types

import numpy as np
import pytest

from aprec.planning import budgets, planner
from aprec.emulator.scoring import Measured
from aprec.emulator.formats import MODE_BITS, MODES, mode_index
from aprec.emulator.ops import Op
from aprec.sensitivity.profile import Estimate, make_profile


def _op(name, k, n, batch=4, weight=True):
  return Op(
      name=name,
      kind="dot_general",
      lhs_shape=(batch, k),
      rhs_shape=(k, n),
      out_shape=(batch, n),
      weight_operand=1 if weight else None,
      macs=batch * k * n,
      contraction_size=k,
  )


def _profile(values, ops):
  est = Estimate(delta_loss=values, stderr=np.zeros_like(values), n_samples=1)
  return make_profile(
      model="toy",
      ops=ops,
      estimates={"perturbation": est},
      dataset="toy",
      n_batches=1,
      batch_size=4,
      baseline_loss=0.1,
      loss="kl",
  )


def _random_values(rng, n_ops):
  # Monotone-ish in precision like real profiles, with noise and exact zeros at fp32.
  base = rng.uniform(0, 1, (n_ops, 1)) * np.array([0, 1e-6, 1e-7, 1e-3, 3e-3, 1e-4, 2e-2])
  return base * rng.uniform(0.5, 2.0, base.shape)


@pytest.mark.parametrize(
    "kind,value",
    [("bits", 6.0), ("bits", 4.5), ("weight_bytes", 30.0), ("bops", 3000.0), ("bops", 900.0)],
)
def test_plan_equals_brute_force_over_all_mode_assignments(kind, value):
  rng = np.random.default_rng(3)
  ops = [_op("a", 3, 4), _op("b", 4, 2), _op("attn", 2, 2, weight=False), _op("c", 2, 3)]
  prof = _profile(_random_values(rng, len(ops)), ops)
  plan = planner.plan(prof, budgets.Budget(kind, value))
  assert plan.exact
  best_value = np.inf
  for combo in itertools.product(range(len(MODES)), repeat=len(ops)):
    combo = np.array(combo)
    used = budgets.budget_used(ops, combo, kind, batch_size=4)
    total = prof.delta_loss[np.arange(len(ops)), combo].sum()
    if used <= value + 1e-9 and total < best_value:
      best_value = total
  assert plan.predicted_delta_loss == pytest.approx(best_value, abs=1e-15)
  assert plan.used <= value + 1e-9
  assert plan.modes == tuple(MODES[m] for m in plan.assignment)


def test_budget_units():
  ops = [_op("a", 3, 4), _op("b", 4, 2)]  # 12 + 8 weights; MACs at batch 4: 48, 32
  int8 = np.full(2, mode_index("int8"))
  assert budgets.budget_used(ops, int8, "bits") == 8.0
  assert budgets.budget_used(ops, int8, "weight_bytes") == 20.0
  assert budgets.budget_used(ops, int8, "bops", batch_size=4) == (12 + 8) * 64
  mixed = np.array([mode_index("int4"), mode_index("fp16")])
  assert budgets.budget_used(ops, mixed, "bits") == (12 * 4 + 8 * 16) / 20
  assert budgets.cost_table(ops, "bits")[0].tolist() == (12 * MODE_BITS).tolist()


def test_parse_budget_and_bad_budgets():
  assert budgets.parse_budget("bits=4.5") == budgets.Budget("bits", 4.5)
  assert budgets.parse_budget("bops=1e9").value == 1e9
  assert str(budgets.parse_budget("weight_bytes=20000")) == "weight_bytes=20000"
  for bad, match in [
      ("bits", "KIND=NUMBER"),
      ("bits=abc", "KIND=NUMBER"),
      ("flops=3", "unknown budget kind 'flops'"),
      ("bits=-1", "positive"),
      ("bits=nan", "positive"),
  ]:
    with pytest.raises(ValueError, match=match):
      budgets.parse_budget(bad)


def test_infeasible_budget_names_the_minimum():
  ops = [_op("a", 3, 4), _op("b", 4, 2)]
  prof = _profile(_random_values(np.random.default_rng(0), 2), ops)
  with pytest.raises(budgets.InfeasibleBudget, match=r"bits=2.*needs bits=4\b"):
    planner.plan(prof, "bits=2")
  with pytest.raises(budgets.InfeasibleBudget, match=r"\(fp32, int8\) needs bits=8"):
    planner.plan(prof, "bits=6", allowed_modes=["fp32", "int8"])
  with pytest.raises(ValueError, match="unknown precision mode 'int2'"):
    planner.plan(prof, "bits=6", allowed_modes=["int2"])


def test_allowed_modes_and_generous_budget():
  ops = [_op("a", 3, 4), _op("b", 4, 2)]
  prof = _profile(_random_values(np.random.default_rng(1), 2), ops)
  assert planner.plan(prof, "bits=32").modes == ("fp32", "fp32")
  plan = planner.plan(prof, "bits=8", allowed_modes=["int8", "int4", "fp8_e4m3"])
  assert set(plan.modes) <= {"int8", "int4", "fp8_e4m3"}
  assert plan.to_dict(prof.op_names)["modes"] == dict(zip(("a", "b"), plan.modes))


def test_coarse_grid_stays_within_budget():
  rng = np.random.default_rng(5)
  ops = [_op(f"op{i}", 7 + i, 5 + i) for i in range(5)]
  prof = _profile(_random_values(rng, 5), ops)
  exact = planner.plan(prof, "bits=6.3")
  coarse = planner.plan(prof, "bits=6.3", max_units=5)
  assert exact.exact and not coarse.exact
  assert coarse.used <= 6.3 and coarse.predicted_delta_loss >= exact.predicted_delta_loss


def test_pareto_front_with_a_stub_evaluator(tmp_path):
  from aprec.app import figures as sensitivity_plots

  ops = [_op("a", 3, 4), _op("b", 4, 2)]
  prof = _profile(_random_values(np.random.default_rng(2), 2), ops)

  def measure(rows):
    rows = np.asarray(rows)
    loss = prof.delta_loss[np.arange(2), rows].sum(1) + 0.1
    return Measured(loss=loss, accuracy=1.0 - loss)

  ev = types.SimpleNamespace(emulator=types.SimpleNamespace(ops=ops), measure=measure)
  points = planner.pareto_front(
      prof, ev, kind="bits", budgets=[4, 6, 9, 32], delta_fn=lambda rows: measure(rows).loss - 0.1
  )
  assert [p.kind for p in points] == ["uniform"] * len(MODES) + ["mixed"] * 4
  for p in points:
    assert p.measured_delta_loss == pytest.approx(p.predicted_delta_loss)
    assert p.measured_ce_delta == pytest.approx(p.predicted_delta_loss)
  mixed = [p for p in points if p.kind == "mixed"]
  assert [p.used <= b for p, b in zip(mixed, [4, 6, 9, 32])] == [True] * 4
  path = sensitivity_plots.pareto(points, tmp_path / "front.png", model="toy")
  assert path.read_bytes()[:4] == b"\x89PNG"


def test_energy_and_latency_budgets_match_the_cost_model_brute_force():
  """Cost-model budgets: the planned assignment is the brute-force optimum, and its energy
  (latency) measured by the cost model itself is within the budget."""
  import itertools

  import numpy as np

  from aprec.hardware import cost
  from aprec.hardware import specs as hardware
  from aprec.planning import planner
  from op_tables import digits_ops

  ops = digits_ops(4)
  spec = hardware.get_spec("edge_npu")
  arrays, state = cost.op_arrays(ops), cost.nominal_state(spec)
  rng = np.random.default_rng(0)
  values = np.sort(rng.random((len(ops), 7)), axis=1)  # lower precision: more Δloss
  for kind, field in (("energy_j", "energy_j"), ("latency_s", "latency_s")):
    total = lambda a: float(
        getattr(cost.cost(arrays, cost.one_hot(np.asarray(a, np.int32)), spec, state), field)
    )
    budget = 0.5 * (total([0] * 4) + total([6] * 4)) / 4  # per example, batch 4
    quantum = budget * budgets.units_per_budget_unit(ops, kind, 4) / 1000  # a DP grid of 1000 steps
    table = np.ceil(budgets.cost_table(ops, kind) / quantum).astype(np.int64)
    capacity = 1000
    best = planner.solve(values, table, capacity)
    brute = min(
        (
            a
            for a in itertools.product(range(7), repeat=4)
            if table[np.arange(4), a].sum() <= capacity
        ),
        key=lambda a: values[np.arange(4), a].sum(),
    )
    assert values[np.arange(4), best].sum() == values[np.arange(4), brute].sum()
    assert total(best) / 4 <= budget * (1 + 1e-6)
    assert budgets.parse_budget(f"{kind}=1e-9@datacenter_gpu").spec_name == "datacenter_gpu"


def test_pareto_front_of_a_retrieval_task_and_its_dominance_check(tmp_path):
  """A front measured by a RetrievalEvaluator (a toy embedder on four docstring pairs): each
  point carries the evaluator's metrics for its row, and ``dominated_by_uniform`` lists
  exactly the (plan, uniform) pairs a brute-force comparison finds."""
  import jax
  import jax.numpy as jnp

  from aprec.app import figures
  from aprec.emulator.retrieval_scoring import RetrievalEvaluator
  from aprec.models import docstrings

  def embed(w, inputs):
    ids, mask = inputs
    h = jnp.tanh(jnp.take(w["table"], ids, axis=0) @ w["proj"]) @ w["out"]
    m = mask[..., None].astype(h.dtype)
    return (h * m).sum(-2) / m.sum(-2)

  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  w = {
      "table": jax.random.normal(k1, (30522, 8)),
      "proj": jax.random.normal(k2, (8, 8)),
      "out": jax.random.normal(k3, (8, 8)),
  }
  split = docstrings.make_split(docstrings.load_pairs()[:4])
  ev = RetrievalEvaluator(embed, w, split, batch_rows=8)
  prof = _profile(_random_values(np.random.default_rng(3), 2), ev.emulator.ops)
  points = planner.pareto_front(prof, ev, kind="bits", budgets=[4.5, 6, 12])
  for p in points:
    row = np.array([mode_index(m) for m in p.modes])
    assert p.metrics == pytest.approx(ev.measure(row)._asdict())
    assert np.isnan(p.measured_accuracy)
  for metric in ("mrr", "recall_at_1"):
    expected = [
        (p.label, u.label)
        for p in points
        if p.kind == "mixed"
        for u in points
        if u.kind == "uniform" and u.used <= p.used and u.metrics[metric] > p.metrics[metric]
    ]
    got = planner.dominated_by_uniform(points, metric)
    assert [(v["plan"], v["uniform"]) for v in got] == expected
  path = figures.pareto_fronts({"bits": points}, tmp_path / "f.png", metric="mrr")
  assert path.read_bytes()[:4] == b"\x89PNG"


def test_a_budget_at_the_cheapest_assignment_on_a_coarse_grid():
  """Costs rounded up to a coarse grid can push the cheapest assignment over a budget equal
  to its cost: the plan is then that assignment (within budget), not an error."""
  rng = np.random.default_rng(7)
  ops = [_op(f"op{i}", 7 + 3 * i, 5 + i) for i in range(5)]
  prof = _profile(_random_values(rng, 5), ops)
  cheapest = budgets.budget_used(ops, np.full(5, mode_index("int4")), "bits")
  chosen = planner.plan(prof, f"bits={cheapest!r}", max_units=7)
  assert not chosen.exact and chosen.modes == ("int4",) * 5 and chosen.used <= cheapest
