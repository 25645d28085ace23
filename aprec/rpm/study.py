"""The runtime-adaptation study: does a policy that adapts beat the best fixed plan?

One ``Study`` is a model deployed on an NNP under one scenario, with a candidate set
(``lookup.planned_candidates``), a ``lookup`` table and a per-step quality measurement
(``step_quality.StepQuality``). ``run_seed`` runs, on one scenario draw:

- ``static*``: the best candidate run statically that meets the cap and the deadline on
  >= 99 % of the steps, chosen with hindsight (``hindsight.static_star``);
- ``hindsight``: the best per-step candidate sequence knowing the whole draw
  (``hindsight.best_sequence``);
- the causal policies (``oracle``, ``lookup``, ``learned``, ``greedy``, ``greedy_deadline``),
  each from ``START_MODE``;

and measures every step's task metric on its held-out batch. ``gain_recovered`` is the
headline: ``(q(learned) - q(static*)) / (q(hindsight) - q(static*))``.

Example:
  >>> gain_recovered(0.5, 0.25, 0.75)
  0.5
  >>> mean_ci([1.0, 2.0, 3.0])[0]
  2.0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from aprec.emulator.formats import mode_index
from aprec.emulator.pak import ActivationScaling
from aprec.hardware import specs
from aprec.hardware.simulator import ScenarioParams
from aprec.rpm import hindsight, lookup
from aprec.rpm.context import Context, idle_state, predict, tables
from aprec.rpm.fault_guard import guard
from aprec.rpm.greedy import Greedy
from aprec.rpm.selector import Selector, SelectorNet
from aprec.rpm.loop import Trace, decision_time_us, run_episode
from aprec.rpm.oracle import Oracle
from aprec.rpm.policy import Policy
from aprec.rpm.static import Static
from aprec.rpm.step_quality import StepQuality
from aprec.rpm.study_summary import ROW_FIELDS as ROW_FIELDS  # re-exported: the study's API
from aprec.rpm.study_summary import gain_recovered as gain_recovered
from aprec.rpm.study_summary import mean_ci as mean_ci
from aprec.rpm.study_summary import mode_share_by_layer as mode_share_by_layer
from aprec.rpm.study_summary import stderr as stderr
from aprec.rpm.study_summary import summarize_seeds as summarize_seeds

START_MODE = "int8"
SAFE_MODE = "int4"
TRAIN_SEED = 0
HELD_OUT_SEEDS = (1001, 1002, 1003, 1004, 1005)
MAX_VIOLATION_FRAC = 0.01
STUDY_BUFFER_BYTES = float(24 << 20)
# Hardware states (PE share, free-buffer share) the candidate plans are made for: an idle
# chip, then fewer PEs and less buffer (co-tenants), so every scenario's moments have plans.
PLAN_STATES = ((1.0, 1.0), (0.75, 1.0), (0.5, 1.0), (0.35, 1.0), (1.0, 0.6), (0.5, 0.5))
# Per-tensor activation scales: what an edge NPU's static quantization supports, and where
# MiniLM-L6's retrieval quality depends on which ops run int4 (per token, the task metric
# stays flat until ~40 of the 48 ops are int4, within the noise of 128 queries).
STUDY_ACTIVATION_SCALING = ActivationScaling.PER_TENSOR


def study_spec() -> specs.NNPSpec:
  """``edge_npu`` with a 24 MiB buffer (a phone-class NPU's SRAM), so MiniLM-L6's widest
  op at 128 texts fits at INT8 on an idle chip (15.6 MiB) and co-tenants can push it out.

  Example:
    >>> study_spec().buffer_bytes / 2**20
    24.0
  """
  return specs.edge_npu().replace(name="edge_npu_24mib", buffer_bytes=STUDY_BUFFER_BYTES)


class Study(NamedTuple):
  """One model under one scenario (module doc)."""

  ctx: Context
  params: ScenarioParams
  candidates: np.ndarray  # [K, n_ops]
  candidate_quality: np.ndarray  # [K, n_batches]
  table: lookup.LookupTable
  quality: StepQuality


STUDY_PAIRS_EVERY = 2  # held-out batches: every 2nd test pair (128 of 256, many modules)


def held_out_quality(
    model: Any, pairs_per_batch: int = 64, num_pairs: int | None = None, split: str = "test"
) -> StepQuality:
  """``StepQuality`` of a loaded retrieval model (``minilm_l6``) on every
  ``STUDY_PAIRS_EVERY``-th pair of its ``split`` (the test split by default; ``"val"`` for
  choosing among policies), the first ``num_pairs`` of them (default all), in batches of
  ``pairs_per_batch`` pairs (two by default; step ``t`` runs batch ``t % 2``)."""
  from aprec.models import docstrings

  pairs = [p for p in docstrings.load_pairs() if p["split"] == split][::STUDY_PAIRS_EVERY]
  pairs = pairs[:num_pairs]
  return StepQuality(
      model.apply_fn,
      model.params,
      docstrings.make_split(pairs),
      pairs_per_batch=pairs_per_batch,
      activation_scaling=STUDY_ACTIVATION_SCALING,
  )


def embedding_delta_loss(model: Any, n_texts: int = 32) -> np.ndarray:
  """A Δloss table ``[n_ops, n_modes]`` at the study's numerics: the shipped profile's
  definition (perturbation, ``loss="cosine"``: mean ``1 - cos`` to the fp32 embeddings) on
  the first ``n_texts / 2`` calibration pairs (queries and documents), two batches, with the
  study's activation scaling."""
  from aprec.sensitivity import methods

  ids, mask = model.data.calibration.x
  n_pairs = len(ids) // 2
  half = n_texts // 4
  rows = np.r_[
      0:half, n_pairs : n_pairs + half, half : 2 * half, n_pairs + half : n_pairs + 2 * half
  ]
  split = lambda a: a.reshape(2, len(rows) // 2, *a.shape[1:])
  ys = np.zeros((2, len(rows) // 2), np.int32)  # unused: the targets are the fp32 embeddings
  batches = [((split(ids[rows])[i], split(mask[rows])[i]), ys[i]) for i in range(2)]
  profile = methods.analyze(
      model.apply_fn,
      model.params,
      batches,
      methods="perturbation",
      loss="cosine",
      activation_scaling=STUDY_ACTIVATION_SCALING,
  )
  return np.asarray(profile.delta_loss, np.float64)


PROFILE_DIR = "checkpoints/minilm_l6/profile"
TABLE_FILE = "delta_loss.npy"  # the table a study policy was trained with, in its directory


def delta_loss_table(model: Any, quality: StepQuality, saved: Any = None) -> tuple[np.ndarray, str]:
  """``(Δloss, source)``: a saved ``.npy`` table, else the shipped profile when its
  activation scaling is the study's (rows matched to the study's ops by name), else
  ``embedding_delta_loss`` (the shipped ``minilm_l6`` profile is per token)."""
  import pathlib

  if saved is not None:
    return np.load(saved), f"table {saved}"
  directory = pathlib.Path(PROFILE_DIR)
  if (directory / "profile.json").is_file():
    from aprec.sensitivity import profile as profile_lib

    profile = profile_lib.load(directory)
    scaling = profile.details.get("numerics", {}).get("activation_scaling")
    if scaling == STUDY_ACTIVATION_SCALING.value:
      names = [op.name for op in profile.ops]
      rows = [names.index(op.name) for op in quality.emulator.ops]
      return np.asarray(profile.delta_loss, np.float64)[rows], f"profile {directory}"
  return (
      embedding_delta_loss(model),
      f"perturbation, loss=cosine, {STUDY_ACTIVATION_SCALING.value}, 16 calibration pairs",
  )


def make_study(quality: StepQuality, delta_loss: np.ndarray, scenario: str) -> Study:
  """The study of ``quality``'s model under ``scenario`` on ``study_spec()``: candidates
  planned, measured on every batch, and the lookup table built."""
  from aprec.hardware import scenarios
  from aprec.rpm.context import make_context

  spec = study_spec()
  params = scenarios.scenario(scenario, spec, quality.emulator.ops)
  ctx = make_context(quality.emulator.ops, spec, delta_loss, float(params.step_period_s))
  candidates = lookup.planned_candidates(ctx, states=PLAN_STATES)
  return Study(
      ctx=ctx,
      params=params,
      candidates=candidates,
      candidate_quality=quality.table(candidates),
      table=lookup_table(ctx, params),
      quality=quality,
  )


def lookup_table(ctx: Context, params: ScenarioParams, n_cap: int = 20, n_pe: int = 8):
  """The lookup grid for a deployment: caps from the least to 1.3x the uniform INT8 step
  power (geometric), PE availability in [0.1, 1], deadlines from the INT4 latency to the
  batch period (5 geometric edges)."""
  t = tables(ctx, idle_state(ctx))
  power = lambda m: float(predict(ctx, t, _one_hot_uniform(ctx, m)).power_w)
  latency = lambda m: float(predict(ctx, t, _one_hot_uniform(ctx, m)).latency_s)
  cap_edges = np.geomspace(0.8 * power("int4"), 1.3 * power("int8"), n_cap)
  pe_edges = np.linspace(0.1, 1.0, n_pe)
  deadline_edges = np.geomspace(latency("int4"), float(params.step_period_s), 5)
  return lookup.build_table(ctx, cap_edges, pe_edges, deadline_edges)


def _one_hot_uniform(ctx: Context, mode: str):
  import jax.numpy as jnp

  from aprec.hardware.cost import one_hot

  return one_hot(jnp.full((ctx.n_ops,), mode_index(mode)), jnp.float32)


def causal_policies(
    selector_params: Any, hidden: int, table: lookup.LookupTable, plans: np.ndarray
) -> dict:
  """``{name: policy}`` of the causal policies the study compares; ``learned`` is the plan
  selector (``aprec.rpm.selector``) over ``plans`` (the study's candidates)."""
  policies: dict[str, Policy] = {
      "oracle": Oracle(),
      "lookup": guard(lookup.Lookup(table=table), SAFE_MODE),
      "greedy": guard(Greedy(), SAFE_MODE),
      "greedy_deadline": guard(
          Greedy(
              restore=True,
              deadline_threshold=0.95,
              restore_buffer=0.8,
              restore_power=0.75,
              ceiling="bf16",
          ),
          SAFE_MODE,
      ),
  }
  if selector_params is not None:
    policies["learned"] = learned_policy(selector_params, hidden, plans)
  return policies


def learned_policy(selector_params: Any, hidden: int, plans: np.ndarray) -> Policy:
  """The study's ``learned`` policy: the plan selector over ``plans``, fault-guarded."""
  net = SelectorNet(hidden=hidden)
  return guard(Selector(net=net, params=selector_params, plans=plans), SAFE_MODE)


def violations(trace: Trace) -> np.ndarray:
  """Per step: over the power cap or past the deadline (ground truth)."""
  m = trace.metrics
  over = np.asarray(m.true_power_w) > np.asarray(m.power_cap_w)
  late = np.asarray(m.latency_s) > np.asarray(m.deadline_s)
  return over | late


def _row(name: str, trace: Trace, q: np.ndarray, batch_texts: int) -> dict:
  m = jax.tree.map(np.asarray, trace.metrics)
  a = np.asarray(trace.assignments)
  return {
      "policy": name,
      "quality": float(np.mean(q)),
      "violation_frac": float(np.mean(violations(trace))),
      "power_violation_frac": float(np.mean(m.true_power_w > m.power_cap_w)),
      "deadline_miss_frac": float(np.mean(m.latency_s > m.deadline_s)),
      "buffer_violation_frac": float(np.mean(m.true_buffer_occupancy > 1.0)),
      "energy_per_inference_j": float(np.mean(m.energy_j) / batch_texts),
      "mean_power_w": float(np.mean(m.true_power_w)),
      "switches_per_step": float(np.mean(np.sum(a[1:] != a[:-1], axis=1))),
      "distinct_assignments": int(len(np.unique(a, axis=0))),
      "fallback_frac": float(np.mean(np.asarray(trace.fallback))),
  }


class SeedResult(NamedTuple):
  rows: list[dict]
  traces: dict[str, Trace]
  quality: dict[str, np.ndarray]  # per step
  hindsight_exact: bool


def run_seed(
    study: Study,
    policies: Mapping[str, Policy],
    seed: int,
    n_steps: int,
    *,
    time_decisions: Sequence[str] = (),
) -> SeedResult:
  """Every policy and both yardsticks on one scenario draw (module doc)."""
  ctx, params = study.ctx, study.params
  key = jax.random.key(seed)
  cq = study.candidate_quality[:, np.arange(n_steps) % study.quality.n_batches]  # [K, T]
  static_runs = [run_episode(params, ctx, Static(), c, key, n_steps) for c in study.candidates]
  static_viol = np.array([np.mean(violations(tr)) for tr in static_runs])
  k = hindsight.static_star(cq.mean(1), static_viol, MAX_VIOLATION_FRAC)
  seq = hindsight.best_sequence(params, study.candidates, cq, hindsight.episode_keys(key, n_steps))
  schedule = study.candidates[seq.choice]
  trace = run_episode(params, ctx, lookup.Scheduled(schedule=schedule), schedule[0], key, n_steps)
  yardsticks = {
      "static*": (static_runs[k], cq[k]),
      "hindsight": (trace, cq[seq.choice, np.arange(n_steps)]),
  }
  causal = run_policies(study, policies, seed, n_steps, time_decisions=time_decisions)
  rows = [_row(n, tr, q, 2 * study.quality.pairs_per_batch) for n, (tr, q) in yardsticks.items()]
  rows = [dict(r, seed=seed) for r in rows] + causal.rows
  traces = {n: tr for n, (tr, _) in yardsticks.items()} | causal.traces
  quality = {n: q for n, (_, q) in yardsticks.items()} | causal.quality
  return SeedResult(rows, traces, quality, seq.exact)


def run_policies(
    study: Study,
    policies: Mapping[str, Policy],
    seed: int,
    n_steps: int,
    *,
    time_decisions: Sequence[str] = (),
) -> SeedResult:
  """The causal ``policies`` alone on one draw, each from ``START_MODE`` (no yardsticks)."""
  ctx, key = study.ctx, jax.random.key(seed)
  start = np.full(ctx.n_ops, mode_index(START_MODE), np.int32)
  rows, traces, quality = [], {}, {}
  for name, policy in policies.items():
    trace = run_episode(study.params, ctx, policy, start, key, n_steps)
    q = study.quality.per_step(trace.assignments)
    row = _row(name, trace, q, 2 * study.quality.pairs_per_batch)
    if name in time_decisions:
      row["decision_us"] = decision_time_us(policy, ctx, trace)
    rows.append(dict(row, seed=seed))
    traces[name], quality[name] = trace, q
  return SeedResult(rows, traces, quality, hindsight_exact=True)  # no hindsight run here
