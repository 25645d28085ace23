"""The evaluation table: every policy in the closed loop on one deployment, measured.

Example:
  >>> from aprec.rpm.deployment import deploy
  >>> d = deploy("digits_cnn", "contention")
  >>> policies = make_policies(["static_fp16", "static_int8"])
  >>> rows, traces, reference = evaluate(d, policies, 20, time_decisions=False)
  >>> [r["policy"] for r in rows], traces["static_int8"].assignments.shape
  (['static_fp16', 'static_int8'], (20, 4))
  >>> bool(rows[1]["energy_per_inference_j"] < rows[0]["energy_per_inference_j"])
  True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from aprec.emulator.formats import mode_index
from aprec.rpm.deployment import Deployment
from aprec.rpm.greedy import Greedy
from aprec.rpm.learned import Learned, PolicyNet
from aprec.rpm.loop import Trace, decision_time_us, measure_accuracy, run_episode, summarize
from aprec.rpm.oracle import Oracle
from aprec.rpm.static import Static

POLICIES = ("static_fp16", "static_int8", "greedy", "greedy_restore", "oracle", "learned")
DEFAULT_MODE = "fp16"  # every op starts here (the seed's runtime initialisation)
SAFE_MODE = "int8"  # what runs after a faulty sensor reading


def make_policies(names: Sequence[str] = POLICIES, *, learned_params: Any = None,
                  hidden: int = 64) -> dict[str, tuple[Any, str]]:
  """``{name: (policy, starting mode)}`` for the named policies."""
  out = {}
  for name in names:
    if name == "static_fp16":
      out[name] = (Static(name="static"), "fp16")
    elif name == "static_int8":
      out[name] = (Static(name="static"), "int8")
    elif name == "greedy":
      out[name] = (Greedy(), DEFAULT_MODE)
    elif name == "greedy_restore":
      out[name] = (Greedy(restore=True), DEFAULT_MODE)
    elif name == "oracle":
      out[name] = (Oracle(), DEFAULT_MODE)
    elif name == "learned":
      if learned_params is None:
        raise ValueError("the learned policy needs parameters: train one or load "
                         "checkpoints/<model>/policy")
      out[name] = (Learned(net=PolicyNet(hidden=hidden), params=learned_params), DEFAULT_MODE)
    else:
      raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}")
  return out


def evaluate(d: Deployment, policies: Mapping[str, tuple[Any, str]], n_steps: int, *,
             seed: int = 0, progress: Callable[[str], None] | None = None,
             time_decisions: bool = True) -> tuple[list[dict], dict[str, Trace], dict]:
  """Runs every policy for ``n_steps`` on the same scenario draw; returns table rows, traces
  and reference numbers (fp32 and fp16 accuracy on the same batches)."""
  cache: dict = {}
  key = jax.random.key(seed)
  n_ops = d.ctx.n_ops
  safe = np.full(n_ops, mode_index(SAFE_MODE), np.int32)
  rows, traces = [], {}
  for name, (policy, start_mode) in policies.items():
    start = np.full(n_ops, mode_index(start_mode), np.int32)
    trace = run_episode(d.params, d.ctx, policy, start, safe, key, n_steps)
    correct = measure_accuracy(d.emulator, d.model.params, d.batches, trace.assignments, cache=cache)
    row = {"model": d.model.name, "scenario": d.scenario, "policy": name,
           **summarize(trace, correct, d.batch_size, d.ctx)}
    row["decision_us"] = decision_time_us(policy, d.ctx, trace) if time_decisions else float("nan")
    rows.append(row)
    traces[name] = trace
    if progress is not None:
      progress(name)
  reference = {}
  for mode in ("fp32", "fp16", "int8"):
    a = np.full((d.batches.x.shape[0], n_ops), mode_index(mode), np.int32)
    c = measure_accuracy(d.emulator, d.model.params, d.batches, a, cache=cache)
    reference[f"{mode}_accuracy"] = float(c.sum() / (len(c) * d.batch_size))
  return rows, traces, reference
