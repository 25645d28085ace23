"""Training the ``selector`` policy on the simulator's own verdicts (full information).

Data: each scenario runs under a random walk over the plan bank (each step the plan index
moves one place with probability ``walk_prob``, or jumps anywhere with probability
``jump_prob``), so readings, temperatures and co-tenant states cover what the RPM meets.
A sample is step ``t``'s readings and the plan that ran (the network's input) and, for
*every* plan of the bank, what the simulator says would happen if it ran at step
``t + 1``: the very ``simulator.step`` from the same hardware state with the same random
draw (switching cost from what ran included). So every sample labels every plan:

  cost[k] = Δloss[k] / max(Δloss) + penalty * (over cap or past deadline or buffer spilled)[k]
            + shaping * (relu(P[k] / cap - 1 + margin) + relu(L[k] / deadline - 1 + margin))
            + switch_weight * (share of ops plan k changes from the plan that ran)

(Δloss over the bank's largest, so ``penalty`` is in units of the whole quality range: the
default makes one violation cost ten times the gap between the best and the worst plan.)

and the objective is the expected cost under the softmax of the network's scores (a
cost-sensitive classification: the labels are constants, gradients reach the scores).
The argmax at run time then picks the least-Δloss plan the network believes the next
step can afford.

Example:
  >>> SelectorConfig().steps
  800
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aprec.hardware import simulator
from aprec.rpm.context import Context
from aprec.rpm.selector import PlanFeatures, Selector, SelectorNet, features


@dataclasses.dataclass(frozen=True, kw_only=True)
class SelectorConfig:
  """Hyper-parameters of selector training."""

  steps: int = 800
  batch_size: int = 256
  learning_rate: float = 3e-3
  hidden: int = 64
  penalty: float = 10.0
  shaping: float = 1.0
  margin: float = 0.02
  switch_weight: float = 0.0
  episodes_per_scenario: int = 8
  episode_steps: int = 300
  walk_prob: float = 0.4
  jump_prob: float = 0.05
  dagger_rounds: int = 5
  explore: float = 0.1
  seed: int = 0

  def __post_init__(self):
    for name in ("steps", "batch_size", "learning_rate", "hidden", "episodes_per_scenario"):
      if not getattr(self, name) > 0:
        raise ValueError(f"selector.{name} = {getattr(self, name)!r}; expected > 0")
    if self.episode_steps < 2:
      raise ValueError(f"selector.episode_steps = {self.episode_steps}; expected >= 2")
    for name in ("penalty", "shaping", "margin", "switch_weight"):
      if not getattr(self, name) >= 0:
        raise ValueError(f"selector.{name} = {getattr(self, name)!r}; expected >= 0")
    if not (0 <= self.walk_prob <= 1 and 0 <= self.jump_prob <= 1 and 0 <= self.explore <= 1):
      raise ValueError("selector.walk_prob, jump_prob and explore must lie in [0, 1]")
    if self.dagger_rounds < 0:
      raise ValueError(f"selector.dagger_rounds = {self.dagger_rounds}; expected >= 0")


class SelectorSamples(NamedTuple):
  """Training samples stacked on a leading axis: inputs and every plan's cost."""

  features: PlanFeatures
  cost: jax.Array  # [n, n_plans]
  violated: jax.Array  # [n, n_plans] bool: the simulator's verdict for each plan


def plan_walk(rng: np.random.Generator, n_plans: int, n_steps: int, cfg: SelectorConfig):
  """``[n_steps]`` plan indices: a random walk with occasional jumps (module doc)."""
  out = np.zeros(n_steps, np.int64)
  k = int(rng.integers(n_plans))
  for t in range(n_steps):
    u = rng.random()
    if u < cfg.jump_prob:
      k = int(rng.integers(n_plans))
    elif u < cfg.jump_prob + cfg.walk_prob:
      k = int(np.clip(k + rng.choice([-1, 1]), 0, n_plans - 1))
    out[t] = k
  return out


def _walk_rollout(params, plans, walk, keys):
  """Runs the plans ``walk`` picks: ``(states, metrics, ran)`` per step."""

  def body(s, xs):
    k, a = xs
    s_next, m = simulator.step(s, a, k, params)
    return s_next, (s, m)

  _, (states, metrics) = jax.lax.scan(body, simulator.init_state(params), (keys, plans[walk]))
  return states, metrics, plans[walk]


def _policy_rollout(ctx, params, plans, net_params, keys, explore_keys, cfg: SelectorConfig):
  """Runs the selector ``net_params`` itself (DAgger: the states its own choices lead to),
  with probability ``cfg.explore`` a random plan instead: ``(states, metrics, ran)``."""
  selector = Selector(net=SelectorNet(hidden=cfg.hidden))

  def body(carry, xs):
    s, a = carry
    k, ke = xs
    s_next, m = simulator.step(s, a, k, params)
    chosen = selector.decide(ctx, net_params, plans, m, a)
    ka, kb = jax.random.split(ke)
    random_plan = plans[jax.random.randint(kb, (), 0, plans.shape[0])]
    return (s_next, jnp.where(jax.random.uniform(ka) < cfg.explore, random_plan, chosen)), (s, m, a)

  carry = (simulator.init_state(params), plans[0])
  _, (states, metrics, ran) = jax.lax.scan(body, carry, (keys, explore_keys))
  return states, metrics, ran


def _label(ctx, params, plans, states, metrics, assignments, keys, cfg: SelectorConfig):
  """Samples of one rollout: decision after step t (its readings and what ran), every plan
  labelled by step t + 1 run from the same state with the same draw."""
  now = jax.tree.map(lambda x: x[:-1], metrics)
  state_next = jax.tree.map(lambda x: x[1:], states)
  feats = jax.vmap(lambda m, a: features(ctx, m, a, plans))(now, assignments[:-1])

  def verdicts(s, k):
    _, m = jax.vmap(lambda p: simulator.step(s, p, k, params))(plans)
    return m

  m = jax.vmap(verdicts)(state_next, keys[1:])
  over = m.true_power_w > m.power_cap_w
  late = m.latency_s > m.deadline_s
  spilled = m.true_buffer_occupancy > 1.0
  violated = over | late | spilled
  relu = lambda x: jnp.clip(x, 0.0, 10.0)
  shaping = relu(m.true_power_w / jnp.maximum(m.power_cap_w, 1e-3) - 1.0 + cfg.margin) + relu(
      m.latency_s / m.deadline_s - 1.0 + cfg.margin
  )
  dl = jnp.sum(ctx.delta_loss[jnp.arange(ctx.n_ops)[None, :], plans], axis=1)  # as plan_costs
  changed = jnp.mean(plans[None, :, :] != assignments[:-1, None, :], axis=-1)
  cost = (
      dl[None, :] / jnp.maximum(jnp.max(dl), 1e-12)
      + cfg.penalty * violated.astype(jnp.float32)
      + cfg.shaping * shaping
      + cfg.switch_weight * changed
  )
  return SelectorSamples(feats, cost, violated)


def _episode_samples(ctx, params, plans, walk, key, cfg: SelectorConfig):
  """Samples of one episode under the random walk ``walk`` over ``plans``."""
  keys = jax.random.split(key, (walk.shape[0], 2))
  states, metrics, ran = _walk_rollout(params, plans, walk, keys[:, 0])
  return _label(ctx, params, plans, states, metrics, ran, keys[:, 0], cfg)


def _policy_samples(ctx, params, plans, net_params, key, cfg: SelectorConfig):
  """Samples of one episode run by the selector ``net_params`` (``_policy_rollout``)."""
  keys = jax.random.split(key, (cfg.episode_steps, 2))
  states, metrics, ran = _policy_rollout(
      ctx, params, plans, net_params, keys[:, 0], keys[:, 1], cfg
  )
  return _label(ctx, params, plans, states, metrics, ran, keys[:, 0], cfg)


def collect(
    ctx: Context,
    scenario_params: Sequence[simulator.ScenarioParams],
    plans: Sequence[np.ndarray],
    cfg: SelectorConfig,
    *,
    net_params: Any = None,
    round_index: int = 0,
) -> SelectorSamples:
  """Samples from every scenario (its own bank ``plans[i]``, padded to one size by repeating
  its last plan) under random plan walks (module doc), or, given ``net_params``, run by
  that selector with ``cfg.explore`` random choices (a DAgger round; ``round_index`` picks
  fresh draws of the training seed)."""
  n_max = max(len(p) for p in plans)
  rng = np.random.default_rng(cfg.seed if round_index == 0 else [cfg.seed, round_index])
  key = jax.random.key(cfg.seed)
  if round_index:
    key = jax.random.fold_in(key, round_index)
  run = jax.jit(_episode_samples, static_argnames=("cfg",))
  run_policy = jax.jit(_policy_samples, static_argnames=("cfg",))
  parts = []
  for params, bank in zip(scenario_params, plans):
    bank = np.asarray(bank, np.int32)
    padded = np.concatenate([bank, np.repeat(bank[-1:], n_max - len(bank), axis=0)])
    for _ in range(cfg.episodes_per_scenario):
      key, k = jax.random.split(key)
      p, bank_j = params.replace(name=""), jnp.asarray(padded)
      if net_params is None:
        walk = plan_walk(rng, len(bank), cfg.episode_steps, cfg)
        parts.append(run(ctx, p, bank_j, jnp.asarray(walk), k, cfg))
      else:
        parts.append(run_policy(ctx, p, bank_j, net_params, k, cfg))
  return jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)


class SelectorResult(NamedTuple):
  params: Any
  history: list[dict]
  seconds: float


def train(samples: SelectorSamples, cfg: SelectorConfig, init_params: Any = None) -> SelectorResult:
  """Adam on the expected cost under the softmax of the scores (module doc).

  Example:
    >>> import numpy as np
    >>> from aprec import hardware
    >>> from aprec.hardware import scenarios
    >>> from aprec.hardware.fit import dot_op
    >>> from aprec.rpm.context import make_context
    >>> ops, spec = [dot_op(8, 16, 4)], hardware.edge_npu()
    >>> params = scenarios.scenario("thermal", spec, ops)
    >>> ctx = make_context(ops, spec, np.zeros((1, 7)), float(params.step_period_s))
    >>> cfg = SelectorConfig(steps=3, batch_size=4, episodes_per_scenario=1, episode_steps=5)
    >>> samples = collect(ctx, [params], [np.array([[5], [6]])], cfg)
    >>> samples.cost.shape
    (4, 2)
    >>> [h["step"] for h in train(samples, cfg).history]
    [0, 2]
  """
  start = time.perf_counter()
  net = SelectorNet(hidden=cfg.hidden)
  key = jax.random.key(cfg.seed + 1)
  example = jax.tree.map(lambda x: x[0], samples.features)
  params = jax.jit(net.init)(key, example) if init_params is None else init_params
  opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(cfg.learning_rate))
  opt_state = opt.init(params)
  n = samples.cost.shape[0]

  def batch_loss(params, s):
    scores = jax.vmap(net.apply, in_axes=(None, 0))(params, s.features)
    probs = jax.nn.softmax(scores, axis=-1)
    pick = jnp.argmax(scores, axis=-1)
    rows = jnp.arange(pick.shape[0])
    aux = {
        "hard_cost": jnp.mean(s.cost[rows, pick]),
        "violation": jnp.mean(s.violated[rows, pick].astype(jnp.float32)),
    }
    return jnp.mean(jnp.sum(probs * s.cost, axis=-1)), aux

  @jax.jit
  def update(params, opt_state, idx):
    s = jax.tree.map(lambda x: x[idx], samples)
    (loss, aux), grads = jax.value_and_grad(batch_loss, has_aux=True)(params, s)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, aux

  rng = np.random.default_rng(cfg.seed)
  history = []
  for i in range(cfg.steps):
    idx = jnp.asarray(rng.integers(0, n, cfg.batch_size))
    params, opt_state, loss, aux = update(params, opt_state, idx)
    if i % 10 == 0 or i == cfg.steps - 1:
      history.append({"step": i, "objective": float(loss), **{k: float(v) for k, v in aux.items()}})
  return SelectorResult(params, history, time.perf_counter() - start)


def train_dagger(
    ctx: Context,
    scenario_params: Sequence[simulator.ScenarioParams],
    plans: Sequence[np.ndarray],
    cfg: SelectorConfig,
    progress: Any = None,
) -> tuple[SelectorResult, SelectorSamples]:
  """Trains on random walks, then ``cfg.dagger_rounds`` times adds the samples of the
  selector's own episodes (``collect(net_params=...)``) and trains on (continues from the
  last parameters) everything gathered so far: the states the trained policy reaches, not
  only those random walks do, are labelled (DAgger; Ross et al., 2011)."""
  samples = collect(ctx, scenario_params, plans, cfg)
  result = train(samples, cfg)
  history = [dict(h, round=0) for h in result.history]
  seconds = result.seconds
  for r in range(1, cfg.dagger_rounds + 1):
    more = collect(ctx, scenario_params, plans, cfg, net_params=result.params, round_index=r)
    samples = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), samples, more)
    result = train(samples, cfg, init_params=result.params)
    history += [dict(h, round=r) for h in result.history]
    seconds += result.seconds
    if progress is not None:
      progress(r, history[-1])
  return SelectorResult(result.params, history, seconds), samples
