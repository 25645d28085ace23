"""Training the ``learned`` policy against the differentiable cost model.

Data: transitions from the simulator's scenarios run under a random walk of assignments
(each step one random op moves one ladder step with probability ``walk_prob``), so
readings, temperatures and co-tenant states cover what the RPM meets. A sample is the
readings of step ``t`` and the assignment that ran (the network's input), and the true
hardware state, cap and deadline of step ``t + 1`` (what the decision is scored under).

Objective per sample, with ``p`` the Gumbel-softmax straight-through relaxation of the
logits (hard one-hot forward, soft gradient)::

  100 * Δloss(p) + energy_weight * E(p) / E_fp16
  + penalty * (relu(P(p) / cap - 1 + margin) + relu(L(p) / deadline - 1 + margin)
               + relu(peak(p) / free - 1))
  + switch_weight * (fraction of ops whose mode changes)

Batches are sharded over every device JAX sees (``NamedSharding`` on the batch axis).

Example:
  >>> TrainConfig().steps
  600
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from aprec.hardware import scenarios as scenarios_lib
from aprec.hardware import simulator
from aprec.hardware.cost import HardwareState, one_hot
from aprec.rpm.context import LADDER, Context, Tables, predict, tables
from aprec.rpm.learned import DELTA_LOSS_SCALE, Features, PolicyNet, features


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
  """Hyper-parameters of policy training (every field settable from an experiment config)."""

  steps: int = 600
  batch_size: int = 256
  learning_rate: float = 3e-3
  hidden: int = 64
  temperature: float = 1.0
  energy_weight: float = 0.5
  penalty: float = 30.0
  margin: float = 0.05
  switch_weight: float = 0.02
  scenarios: tuple[str, ...] = ("steady", "contention", "thermal", "battery", "burst")
  episodes_per_scenario: int = 8
  episode_steps: int = 250
  walk_prob: float = 0.5
  seed: int = 0

  def __post_init__(self):
    positive = (
        "steps",
        "batch_size",
        "learning_rate",
        "hidden",
        "temperature",
        "episodes_per_scenario",
        "episode_steps",
    )
    for name in positive:
      if not getattr(self, name) > 0:
        raise ValueError(f"train.{name} = {getattr(self, name)!r}; expected > 0")
    for name in ("energy_weight", "penalty", "switch_weight"):
      if not getattr(self, name) >= 0:
        raise ValueError(f"train.{name} = {getattr(self, name)!r}; expected >= 0")
    if not 0.0 <= self.margin < 0.5:
      raise ValueError(f"train.margin = {self.margin}; expected in [0, 0.5)")
    if not 0.0 <= self.walk_prob <= 1.0:
      raise ValueError(f"train.walk_prob = {self.walk_prob}; expected in [0, 1]")
    known = scenarios_lib.SCENARIOS + scenarios_lib.STUDY_SCENARIOS
    bad = [s for s in self.scenarios if s not in known]
    if bad or not self.scenarios:
      raise ValueError(
          f"train.scenarios = {self.scenarios}; expected a non-empty subset of " f"{known}"
      )


class Samples(NamedTuple):
  """Precomputed training samples (stacked on a leading axis)."""

  features: Features
  current: jax.Array  # [n, n_ops] the assignment that ran
  next_tables: Tables  # priced under the true next state
  next_cap_w: jax.Array
  next_deadline_s: jax.Array
  next_free_bytes: jax.Array


def _random_walk(key, n_ops: int, n_steps: int, walk_prob: float) -> np.ndarray:
  rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel()[-1])
  pos = rng.integers(0, len(LADDER), n_ops)
  out = np.zeros((n_steps, n_ops), np.int32)
  for t in range(n_steps):
    if rng.random() < walk_prob:
      i = rng.integers(n_ops)
      pos[i] = np.clip(pos[i] + rng.choice([-1, 1]), 0, len(LADDER) - 1)
    out[t] = np.asarray(LADDER)[pos]
  return out


def collect(
    ctx: Context, scenario_params: Sequence[simulator.ScenarioParams], config: TrainConfig
) -> Samples:
  """Transitions from every scenario under random-walk assignments (module doc)."""
  key = jax.random.key(config.seed)
  feats = jax.jit(jax.vmap(lambda m, a: features(ctx, m, a)[0]))

  @jax.jit
  def next_info(m):
    state = HardwareState(m.true_pe_availability, m.free_buffer_bytes, m.clock_scale)
    return jax.vmap(lambda s: tables(ctx, HardwareState(*s)))(tuple(state))

  parts = []
  for params in scenario_params:
    for _ in range(config.episodes_per_scenario):
      key, k_walk, k_sim = jax.random.split(key, 3)
      walk = _random_walk(k_walk, ctx.n_ops, config.episode_steps, config.walk_prob)
      _, m = simulator.rollout(
          params, simulator.init_state(params), walk, k_sim, n_steps=config.episode_steps
      )
      now = jax.tree.map(lambda x: x[:-1], m)
      nxt = jax.tree.map(lambda x: x[1:], m)
      parts.append(
          Samples(
              features=feats(now, jnp.asarray(walk[:-1])),
              current=jnp.asarray(walk[:-1]),
              next_tables=next_info(nxt),
              next_cap_w=nxt.power_cap_w,
              next_deadline_s=nxt.deadline_s,
              next_free_bytes=nxt.free_buffer_bytes,
          )
      )
  return jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)


def objective(
    ctx: Context, logits: jax.Array, key: jax.Array, s: Samples, config: TrainConfig
) -> tuple[jax.Array, dict]:
  """The relaxed objective of one sample (module doc)."""
  gumbel = jax.random.gumbel(key, logits.shape)
  soft = jax.nn.softmax((logits + gumbel) / config.temperature, axis=-1)
  hard = one_hot(jnp.argmax(soft, axis=-1), soft.dtype)
  p = hard + soft - jax.lax.stop_gradient(soft)
  pred = predict(ctx, s.next_tables, p)
  fp16 = predict(ctx, s.next_tables, one_hot(jnp.full((ctx.n_ops,), 2), jnp.float32))
  energy = pred.power_w / fp16.power_w
  # Clipped: a battery drained to a zero cap must not make the objective infinite.
  excess = lambda x: jnp.clip(x, 0.0, 10.0)
  power_excess = excess(pred.power_w / jnp.maximum(s.next_cap_w, 1e-3) - 1.0 + config.margin)
  latency_excess = excess(pred.latency_s / s.next_deadline_s - 1.0 + config.margin)
  buffer_excess = excess(pred.peak_bytes / jnp.maximum(s.next_free_bytes, 1.0) - 1.0)
  switches = 1.0 - jnp.mean(jnp.sum(p * one_hot(s.current, p.dtype), axis=-1))
  loss = (
      DELTA_LOSS_SCALE * pred.delta_loss
      + config.energy_weight * energy
      + config.penalty * (power_excess + latency_excess + buffer_excess)
      + config.switch_weight * switches
  )
  return loss, {
      "delta_loss": pred.delta_loss,
      "energy_vs_fp16": energy,
      "violation": (
          (power_excess > config.margin) | (latency_excess > config.margin) | (buffer_excess > 0)
      ).astype(jnp.float32),
  }


class TrainResult(NamedTuple):
  params: Any
  history: list[dict]
  seconds: float


def train(
    ctx: Context,
    samples: Samples,
    config: TrainConfig,
    *,
    progress: Callable[[int], None] | None = None,
) -> TrainResult:
  """Adam on the mean objective over random mini-batches; returns params and the curve.

  Example:
    A few steps on a one-op table (the real runs use the defaults of ``TrainConfig``):

    >>> import numpy as np
    >>> from aprec import hardware
    >>> from aprec.hardware import scenarios
    >>> from aprec.hardware.fit import dot_op
    >>> from aprec.rpm.context import make_context
    >>> ops, spec = [dot_op(8, 16, 4)], hardware.edge_npu()
    >>> params = scenarios.scenario("steady", spec, ops)
    >>> ctx = make_context(ops, spec, np.zeros((1, 7)), float(params.step_period_s))
    >>> config = TrainConfig(steps=3, batch_size=8, episodes_per_scenario=1, episode_steps=9)
    >>> result = train(ctx, collect(ctx, [params], config), config)
    >>> [h["step"] for h in result.history]
    [0, 2]
  """
  start = time.perf_counter()
  net = PolicyNet(hidden=config.hidden)
  key = jax.random.key(config.seed + 1)
  key, k_init = jax.random.split(key)
  example = jax.tree.map(lambda x: x[0], samples.features)
  opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(config.learning_rate))
  n = samples.current.shape[0]
  devices = jax.devices()
  batch = config.batch_size - config.batch_size % len(devices) or len(devices)
  mesh = Mesh(np.array(devices), ("batch",))
  sharding = NamedSharding(mesh, PartitionSpec("batch"))
  # Replicated from the start, as every update returns them: one compile of ``update``.
  replicated = NamedSharding(mesh, PartitionSpec())
  params = jax.device_put(jax.jit(net.init)(k_init, example), replicated)
  opt_state = jax.device_put(opt.init(params), replicated)

  def batch_loss(params, keys, s):
    logits = jax.vmap(net.apply, in_axes=(None, 0))(params, s.features)
    losses, aux = jax.vmap(lambda lg, k, x: objective(ctx, lg, k, x, config))(logits, keys, s)
    return jnp.mean(losses), jax.tree.map(jnp.mean, aux)

  @jax.jit
  def update(params, opt_state, key, idx, samples):
    s = jax.tree.map(
        lambda x: jax.lax.with_sharding_constraint(x[idx], sharding) if x.ndim >= 1 else x, samples
    )
    keys = jax.random.split(key, idx.shape[0])
    (loss, aux), grads = jax.value_and_grad(batch_loss, has_aux=True)(params, keys, s)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, aux

  rng = np.random.default_rng(config.seed)
  history = []
  for i in range(config.steps):
    key, k = jax.random.split(key)
    idx = jnp.asarray(rng.integers(0, n, batch))
    params, opt_state, loss, aux = update(params, opt_state, k, idx, samples)
    if i % 10 == 0 or i == config.steps - 1:
      history.append(
          {"step": i, "objective": float(loss), **{k2: float(v) for k2, v in aux.items()}}
      )
    if progress is not None:
      progress(i + 1)
  return TrainResult(params, history, time.perf_counter() - start)
