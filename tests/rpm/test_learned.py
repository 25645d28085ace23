"""Tests for aprec/rpm/learned.py and aprec/rpm/train.py: training lowers the objective and
the hard decisions respect the constraints on held-out states."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aprec.hardware import scenarios, simulator
from aprec.rpm.learned import Learned, PolicyNet, features, violation
from aprec.rpm.train import TrainConfig, collect, train
from rpm_helpers import deployment

CFG = TrainConfig(
    steps=40,
    batch_size=64,
    episodes_per_scenario=1,
    episode_steps=60,
    scenarios=("contention", "thermal", "burst"),
    hidden=32,
    seed=0,
)


@functools.cache
def trained(cnn_ops_key, spec_key):
  del cnn_ops_key, spec_key
  from aprec.hardware import specs as hardware
  from op_tables import digits_ops

  ops, spec = digits_ops(32), hardware.edge_npu()
  _, ctx = deployment("contention", ops, spec)
  params = [scenarios.scenario(s, spec, ops) for s in CFG.scenarios]
  samples = collect(ctx, params, CFG)
  return ctx, params, train(ctx, samples, CFG)


def test_training_lowers_the_objective():
  _, _, result = trained(0, 0)
  first = np.mean([h["objective"] for h in result.history[:2]])
  last = np.mean([h["objective"] for h in result.history[-2:]])
  assert np.isfinite(last) and last < 0.7 * first


def test_hard_decisions_respect_constraints_on_held_out_states():
  ctx, params, result = trained(0, 0)
  policy = Learned(net=PolicyNet(hidden=CFG.hidden), params=result.params)

  @jax.jit
  def check(metrics, modes):
    new = policy.decide(ctx, result.params, metrics, modes)
    _, t, limits = features(ctx, metrics, modes)
    cheapest = jnp.full_like(modes, 6)
    return (
        violation(ctx, t, limits, new, policy.margin),
        violation(ctx, t, limits, cheapest, policy.margin),
    )

  held_out = jax.random.key(1234)  # not the training seed
  rng = np.random.default_rng(7)
  checked = 0
  for p in params:
    walk = rng.choice([1, 2, 5], size=(80, ctx.n_ops)).astype(np.int32)
    _, m = simulator.rollout(p, simulator.init_state(p), walk, held_out, n_steps=80)
    bad, hopeless = jax.vmap(check)(m, jnp.asarray(walk))
    bad, hopeless = np.asarray(bad), np.asarray(hopeless)
    assert not np.any(bad & ~hopeless)  # whenever something fits, the decision fits
    checked += int(np.sum(~hopeless))
  assert checked > 100


def test_learned_without_params_is_a_clear_error():
  with pytest.raises(ValueError, match="no parameters"):
    Learned().init(None, jnp.zeros(2, jnp.int32))


def test_train_config_rejects_bad_values():
  with pytest.raises(ValueError, match="margin"):
    TrainConfig(margin=0.9)
  with pytest.raises(ValueError, match="scenarios"):
    TrainConfig(scenarios=("nowhere",))
