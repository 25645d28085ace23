"""Hindsight yardsticks over a candidate set: ``static*`` and the best per-step sequence.

Both know the whole trace — every random draw of the scenario and the quality each
candidate assignment measures at every step — and choose among the same ``candidates``
(``[K, n_ops]`` int32 assignments):

- ``static_star``: the single candidate with the best mean quality among those that meet
  the power cap and the deadline on at least ``1 - max_violation_frac`` of the steps (each
  run through the simulator as a ``Static`` policy would run);
- ``best_sequence``: the per-step sequence of candidates with the most total quality,
  found by dynamic programming through the simulator's own dynamics
  (``aprec.hardware.dynamics``): co-tenants, bursts, heat and saver events are exogenous
  (drawn once from the keys), the switching cost depends on the previous candidate, and the
  die temperature depends on every power the sequence drew. A step over the cap or past
  the deadline costs ``violation_penalty`` (larger than any quality), so the sequence
  violates only where no candidate can avoid it.

The temperature is continuous, so the DP keeps, per previous candidate, the Pareto set of
(total quality, temperature) labels: a cooler die never hurts (the cap and the clock only
drop when hot, and the RC model is monotone), so a label that is both worse and hotter
can be dropped without loss. While every Pareto set fits ``max_labels`` the DP is exact;
beyond it labels are thinned (the result is then a feasible sequence and a lower bound,
reported in ``Sequence.exact``). Without thermal dynamics the temperature never changes
and the DP is exact over the previous candidate alone. The battery-window scenario
(``battery``) is not supported: its window energy would be a second continuous state.

Example:
  >>> import jax, numpy as np
  >>> from aprec import hardware
  >>> from aprec.hardware import scenarios
  >>> from aprec.hardware.fit import dot_op
  >>> params = scenarios.scenario("contention_swing", hardware.edge_npu(), [dot_op(64, 256, 256)])
  >>> cands = np.array([[5], [6]], np.int32)          # int8, int4
  >>> quality = np.array([[1.0] * 6, [0.5] * 6])      # per candidate and step
  >>> keys = episode_keys(jax.random.key(0), 6)
  >>> best_sequence(params, cands, quality, keys).choice.tolist()
  [0, 0, 0, 0, 0, 0]
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aprec.hardware import dynamics, simulator
from aprec.hardware.cost import HardwareState, cost, one_hot

VIOLATION_PENALTY = 1e3


def episode_keys(key: jax.Array, n_steps: int) -> jax.Array:
  """The simulator's key of every step, as ``aprec.rpm.loop.run_episode`` draws them."""
  return jax.random.split(key, (n_steps, 2))[:, 0]


class Sequence(NamedTuple):
  """The hindsight sequence: ``choice[t]`` indexes the candidates; ``value`` is its total
  quality less penalties as the DP computed it; ``exact``: no label was thinned."""

  choice: np.ndarray
  value: float
  exact: bool


@functools.partial(jax.jit, static_argnames=("n_steps",))
def _exogenous_trace(params, keys, n_steps: int):
  def body(s, k):
    ex = dynamics.exogenous(s, k, params)
    s = s._replace(
        job_steps_left=ex.job_steps_left,
        job_pe=ex.job_pe,
        job_buffer=ex.job_buffer,
        burst_steps_left=ex.burst_steps_left,
        heat_steps_left=ex.heat_steps_left,
        saver_steps_left=ex.saver_steps_left,
    )
    return s, ex

  return jax.lax.scan(body, simulator.init_state(params), keys)[1]


@jax.jit
def _candidate_costs(params, candidates, ex, clock):
  """Latency and energy of every candidate at every step, ``[T, K]`` each, at one clock."""
  probs = jax.vmap(lambda a: one_hot(a, jnp.float32))(candidates)

  def at(pe, free):
    hw = HardwareState(pe, free, clock)
    c = jax.vmap(lambda p: cost(params.ops, p, params.spec, hw))(probs)
    return c.latency_s, c.energy_j

  return jax.vmap(at)(ex.pe_availability, ex.free_buffer_bytes)


@jax.jit
def _switch_costs(params, candidates):
  """``[K + 1, K]`` switch latency and energy from each candidate (last row: nothing ran)."""
  probs = jax.vmap(lambda a: one_hot(a, jnp.float32))(candidates)
  prev = jnp.concatenate([candidates, jnp.full((1, candidates.shape[1]), -1, jnp.int32)])
  pair = lambda a, p: dynamics.switch_cost(params, a, p)
  return jax.vmap(lambda a: jax.vmap(lambda p: pair(a, p))(probs))(prev)


@jax.jit
def _expand(params, t, temperature, latency, energy, ex_t):
  """``advance`` over labels × candidates: power, cap and next temperature."""
  phys = dynamics.advance(params, t, temperature, jnp.float32(0.0), ex_t, latency, energy)
  return phys.power_w, phys.power_cap_w, phys.temperature_c


def _pareto(value: np.ndarray, temperature: np.ndarray, max_labels: int) -> tuple[np.ndarray, bool]:
  """Indices of the (max value, min temperature) Pareto set; thinned to ``max_labels``."""
  order = np.lexsort((-value, temperature))  # coolest first, best value first among equals
  best = np.maximum.accumulate(value[order])
  keep = np.ones(len(order), bool)
  keep[1:] = value[order][1:] > best[:-1]
  kept = order[keep]
  if len(kept) <= max_labels:
    return kept, True
  pick = np.unique(np.round(np.linspace(0, len(kept) - 1, max_labels)).astype(int))
  return kept[pick], False


def best_sequence(
    params: simulator.ScenarioParams,
    candidates: np.ndarray,
    quality: np.ndarray,
    keys: jax.Array,
    *,
    violation_penalty: float = VIOLATION_PENALTY,
    max_labels: int = 64,
) -> Sequence:
  """The per-step candidate sequence with the most total quality (module doc).

  Args:
    params: the scenario (``battery_window_steps`` must be 0).
    candidates: ``[K, n_ops]`` int32 assignments.
    quality: ``[K, T]`` what candidate ``k`` scores at step ``t``.
    keys: ``[T]`` the simulator's key of each step (``episode_keys``).
    violation_penalty: subtracted per step over the cap or past the deadline.
    max_labels: Pareto labels kept per previous candidate.
  """
  if int(params.battery_window_steps) > 0:
    raise ValueError(
        "best_sequence does not support battery windows (a second continuous state); "
        "use a scenario without battery_window_steps"
    )
  candidates = np.asarray(candidates, np.int32)
  quality = np.asarray(quality, np.float64)
  n_cand, n_steps = quality.shape
  if candidates.shape[0] != n_cand or len(keys) != n_steps:
    raise ValueError(
        f"candidates {candidates.shape}, quality {quality.shape} and {len(keys)} keys disagree"
    )
  params = params.replace(name="")
  ex = _exogenous_trace(params, keys, n_steps)
  cands = jnp.asarray(candidates)
  costs = {
      hot: _candidate_costs(params, cands, ex, jnp.float32(c))
      for hot, c in ((False, 1.0), (True, float(params.throttled_clock_scale)))
  }
  sw_latency, sw_energy = (np.asarray(x) for x in _switch_costs(params, cands))
  limit = float(params.temp_limit_c)

  n_rows = n_cand * max_labels
  prev = np.array([n_cand], np.int64)  # the "nothing ran yet" row
  temp = np.array([float(params.initial_temperature_c)], np.float32)
  value = np.zeros(1)
  parents, choices = [], []
  exact = True
  for t in range(n_steps):
    hot = temp > limit
    lat_c = np.where(
        hot[:, None], np.asarray(costs[True][0][t])[None], np.asarray(costs[False][0][t])[None]
    )
    en_c = np.where(
        hot[:, None], np.asarray(costs[True][1][t])[None], np.asarray(costs[False][1][t])[None]
    )
    # float32 sums in the order the simulator adds them
    latency = (lat_c.astype(np.float32) + sw_latency[prev]).astype(np.float32)
    energy = (en_c.astype(np.float32) + sw_energy[prev]).astype(np.float32)
    ex_t = jax.tree.map(lambda x: x[t], ex)
    n = len(temp)
    pad = lambda x: np.concatenate([x, np.repeat(x[:1], n_rows - n, 0)])  # one compiled shape
    power, cap, nxt = (
        np.asarray(x)[:n]
        for x in _expand(params, jnp.int32(t), pad(temp[:, None]), pad(latency), pad(energy), ex_t)
    )
    violated = (power > cap) | (latency > np.asarray(ex_t.deadline_s))
    new_value = value[:, None] + quality[:, t][None, :] - violation_penalty * violated
    labels_prev, labels_k, labels_t, labels_v = [], [], [], []
    for k in range(n_cand):
      kept, full = _pareto(new_value[:, k], nxt[:, k], max_labels)
      exact &= full
      labels_prev.append(kept)
      labels_k.append(np.full(len(kept), k))
      labels_t.append(nxt[kept, k])
      labels_v.append(new_value[kept, k])
    parents.append(np.concatenate(labels_prev))
    choices.append(np.concatenate(labels_k))
    prev = choices[-1]
    temp = np.concatenate(labels_t).astype(np.float32)
    value = np.concatenate(labels_v)
  i = int(np.argmax(value))
  best = float(value[i])
  choice = np.zeros(n_steps, np.int32)
  for t in range(n_steps - 1, -1, -1):
    choice[t] = choices[t][i]
    i = parents[t][i]
  return Sequence(choice=choice, value=best, exact=bool(exact))


def static_star(
    quality: np.ndarray, violation_frac: np.ndarray, max_violation_frac: float = 0.01
) -> int:
  """The candidate with the best mean quality among those violating on at most
  ``max_violation_frac`` of the steps (with none, the one that violates least).

  Args:
    quality: ``[K]`` mean quality of each candidate run statically.
    violation_frac: ``[K]`` its fraction of steps over the cap or past the deadline.

  Example:
    >>> static_star(np.array([0.9, 0.8, 0.5]), np.array([0.2, 0.0, 0.0]))
    1
  """
  quality, violation_frac = np.asarray(quality), np.asarray(violation_frac)
  ok = violation_frac <= max_violation_frac + 1e-12
  if not ok.any():
    return int(np.argmin(violation_frac))
  return int(np.argmax(np.where(ok, quality, -np.inf)))
