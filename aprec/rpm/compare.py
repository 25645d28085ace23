"""The comparison table: every policy in the closed loop on one deployment, measured.

``POLICIES`` is the registry: a dict from a policy's table name to a factory
``factory(learned_params, hidden) -> (policy, starting mode)``. Deployable policies come
wrapped in the sensor-fault guard; the static ones read nothing and the oracle reads the
true state, so they have nothing to guard.

Example:
  >>> policies = make_policies(["static_int8", "greedy"])
  >>> {name: (p.name, mode) for name, (p, mode) in policies.items()}
  {'static_int8': ('static', 'int8'), 'greedy': ('greedy', 'fp16')}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from aprec.emulator.formats import mode_index
from aprec.rpm.deployment import Deployment
from aprec.rpm.greedy import Greedy
from aprec.rpm.fault_guard import guard
from aprec.rpm.learned import Learned, PolicyNet
from aprec.rpm.loop import Trace, decision_time_us, measure_accuracy, run_episode, summarize
from aprec.rpm.oracle import Oracle
from aprec.rpm.policy import Policy
from aprec.rpm.static import Static

DEFAULT_MODE = "fp16"  # every op starts here (the seed's runtime initialisation)
SAFE_MODE = "int8"  # what runs after a faulty sensor reading


def _learned(learned_params: Any, hidden: int) -> tuple[Policy, str]:
  if learned_params is None:
    raise ValueError(
        "the learned policy needs parameters: train one or load " "checkpoints/<model>/policy"
    )
  net = PolicyNet(hidden=hidden)
  return guard(Learned(net=net, params=learned_params), SAFE_MODE), DEFAULT_MODE


PolicyFactory = Callable[[Any, int], tuple[Policy, str]]
POLICIES: dict[str, PolicyFactory] = {
    "static_fp16": lambda learned_params, hidden: (Static(), "fp16"),
    "static_int8": lambda learned_params, hidden: (Static(), "int8"),
    "greedy": lambda learned_params, hidden: (guard(Greedy(), SAFE_MODE), DEFAULT_MODE),
    "greedy_restore": lambda learned_params, hidden: (
        guard(Greedy(restore=True), SAFE_MODE),
        DEFAULT_MODE,
    ),
    "oracle": lambda learned_params, hidden: (Oracle(), DEFAULT_MODE),
    "learned": _learned,
}


def make_policies(
    names: Sequence[str] = tuple(POLICIES), *, learned_params: Any = None, hidden: int = 64
) -> dict[str, tuple[Policy, str]]:
  """``{name: (policy, starting mode)}`` for the named policies of ``POLICIES``."""
  unknown = [n for n in names if n not in POLICIES]
  if unknown:
    raise ValueError(f"unknown policy {unknown[0]!r}; known: {', '.join(POLICIES)}")
  return {name: POLICIES[name](learned_params, hidden) for name in names}


def compare(
    d: Deployment,
    policies: Mapping[str, tuple[Policy, str]],
    n_steps: int,
    *,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    time_decisions: bool = True,
) -> tuple[list[dict], dict[str, Trace], dict]:
  """Runs every policy for ``n_steps`` on the same scenario draw; returns table rows, traces
  and reference numbers (fp32 and fp16 accuracy on the same batches)."""
  cache: dict = {}
  key = jax.random.key(seed)
  n_ops = d.ctx.n_ops
  rows, traces = [], {}
  for name, (policy, start_mode) in policies.items():
    start = np.full(n_ops, mode_index(start_mode), np.int32)
    trace = run_episode(d.params, d.ctx, policy, start, key, n_steps)
    correct = measure_accuracy(
        d.emulator, d.model.params, d.batches, trace.assignments, cache=cache
    )
    row = {
        "model": d.model.name,
        "scenario": d.scenario,
        "policy": name,
        **summarize(trace, correct, d.batch_size, d.ctx),
    }
    row["decision_us"] = decision_time_us(policy, d.ctx, trace) if time_decisions else float("nan")
    rows.append(row)
    traces[name] = trace
    if progress is not None:
      progress(name)
  reference = {}
  for mode in ("fp32", "fp16", "int8"):
    a = np.full((len(d.batches.y), n_ops), mode_index(mode), np.int32)
    c = measure_accuracy(d.emulator, d.model.params, d.batches, a, cache=cache)
    reference[f"{mode}_accuracy"] = float(c.sum() / (len(c) * d.batch_size))
  return rows, traces, reference
