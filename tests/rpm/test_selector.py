"""Tests for aprec/rpm/selector.py and train_selector.py: plan prices, the simulator's labels,
the argmax decision, a selector that learns to keep within the cap, checkpoints."""

from __future__ import annotations

import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aprec.hardware.cost import one_hot
from aprec.rpm import policy_io, train_selector
from aprec.rpm.context import idle_state, predict, tables
from aprec.rpm.loop import run_episode
from aprec.rpm.lookup import Scheduled, planned_candidates
from aprec.rpm.selector import Selector, SelectorNet, example_features, plan_costs
from aprec.rpm.study import violations
from op_tables import dot
from rpm_helpers import deployment

OPS = [dot(32, 64, 64, "a"), dot(32, 64, 128, "b"), dot(32, 128, 64, "c")]


def test_plan_costs_equal_the_cost_model_prediction_of_each_plan(spec):
  _, ctx = deployment("contention_swing", OPS, spec)
  t = tables(ctx, idle_state(ctx)._replace(pe_availability=jnp.float32(0.4)))
  plans = jnp.array([[0, 0, 0], [5, 6, 2], [6, 6, 6], [3, 5, 1]], jnp.int32)
  got = plan_costs(ctx, t, plans)
  for k, plan in enumerate(plans):
    want = predict(ctx, t, one_hot(plan, jnp.float32))
    np.testing.assert_allclose(got.power_w[k], want.power_w, rtol=1e-6)
    np.testing.assert_allclose(got.latency_s[k], want.latency_s, rtol=1e-6)
    np.testing.assert_allclose(got.peak_bytes[k], want.peak_bytes, rtol=1e-6)
    np.testing.assert_allclose(got.delta_loss[k], want.delta_loss, rtol=1e-6)


def test_labels_are_the_simulators_verdicts_on_the_steps_that_ran(spec):
  """Each sample labels every plan; the plan that really ran next must carry the verdict
  the closed loop (``run_episode`` replaying the walk) records for that step."""
  params, ctx = deployment("thermal_swing", OPS, spec)
  plans = planned_candidates(ctx, states=((1.0, 1.0), (0.5, 0.5)))
  cfg = train_selector.SelectorConfig(episode_steps=30, walk_prob=0.6, jump_prob=0.2)
  walk = train_selector.plan_walk(np.random.default_rng(3), len(plans), 30, cfg)
  key = jax.random.key(11)
  samples = jax.jit(train_selector._episode_samples, static_argnames=("cfg",))(
      ctx, params.replace(name=""), jnp.asarray(plans), jnp.asarray(walk), key, cfg
  )
  schedule = plans[walk]
  trace = run_episode(params, ctx, Scheduled(schedule=schedule), schedule[0], key, 30)
  ran_next = np.asarray(samples.violated)[np.arange(29), walk[1:]]
  np.testing.assert_array_equal(ran_next, violations(trace)[1:])
  assert 0 < np.asarray(samples.violated).mean() < 1  # both verdicts occur


def test_selector_runs_the_best_scoring_plan(spec):
  _, ctx = deployment("steady", OPS, spec)
  plans = np.array([[5, 5, 5], [6, 6, 6], [2, 2, 2]], np.int32)
  net = SelectorNet(hidden=4)
  params = net.init(jax.random.key(0), example_features(3))
  policy = Selector(net=net, params=params, plans=plans)
  readings = types.SimpleNamespace(
      power_w=1.0, power_cap_w=2.0, buffer_occupancy=0.2, pe_availability=1.0,
      latency_s=1e-6, deadline_s=2e-6, temperature_c=40.0,
  )  # fmt: skip
  state = policy.init(ctx, plans[0])
  from aprec.rpm.selector import features

  scores = net.apply(params, features(ctx, readings, jnp.asarray(plans[0]), jnp.asarray(plans)))
  _, got = policy(state, readings, jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(got), plans[int(np.argmax(scores))])
  with pytest.raises(ValueError, match="plans have shape"):
    Selector(net=net, params=params, plans=plans[:, :2]).init(ctx, plans[0])
  with pytest.raises(ValueError, match="n_plans >= 1"):
    Selector(net=net, params=params, plans=plans[:0]).init(ctx, plans[0])
  with pytest.raises(ValueError, match="trained parameters"):
    Selector(net=net).init(ctx, plans[0])


def test_trained_selector_keeps_within_the_cap_and_beats_the_cheapest_plan(spec):
  """Trained under co-tenant contention, the selector violates far less than always running
  the best plan (~30 % of steps here), and loses less quality than the cheapest plan."""
  params, ctx = deployment("contention", OPS, spec)
  plans = planned_candidates(ctx)
  cfg = train_selector.SelectorConfig(
      steps=150, batch_size=64, hidden=16, episodes_per_scenario=2, episode_steps=120
  )
  result = train_selector.train(train_selector.collect(ctx, [params], [plans], cfg), cfg)
  policy = Selector(net=SelectorNet(hidden=16), params=result.params, plans=plans)
  key = jax.random.key(99)  # not a training draw
  dl = lambda tr: float(
      np.asarray(ctx.delta_loss)[np.arange(3)[None], np.asarray(tr.assignments)].sum(1).mean()
  )
  learned = run_episode(params, ctx, policy, plans[0], key, 150)
  best = run_episode(params, ctx, Scheduled(schedule=plans[:1]), plans[0], key, 150)
  cheapest = run_episode(params, ctx, Scheduled(schedule=plans[-1:]), plans[-1], key, 150)
  assert violations(best).mean() > 0.2
  assert violations(learned).mean() < 0.5 * violations(best).mean()
  assert dl(learned) < dl(cheapest)


def test_dagger_rollout_runs_the_selector_as_the_closed_loop_does(spec):
  """Without exploration, a DAgger episode runs exactly the plans the selector picks in
  ``run_episode``, and its labels are the simulator's verdicts on the steps that ran."""
  params, ctx = deployment("thermal_swing", OPS, spec)
  plans = jnp.asarray(planned_candidates(ctx, states=((1.0, 1.0), (0.5, 0.5))))
  net = SelectorNet(hidden=8)
  net_params = net.init(jax.random.key(4), example_features(plans.shape[0]))
  cfg = train_selector.SelectorConfig(hidden=8, episode_steps=40, explore=0.0)
  key = jax.random.key(21)
  run = jax.jit(train_selector._policy_samples, static_argnames=("cfg",))
  samples = run(ctx, params.replace(name=""), plans, net_params, key, cfg)
  policy = Selector(net=net, params=net_params, plans=plans)
  trace = run_episode(params, ctx, policy, plans[0], key, 40)
  ran = np.asarray(trace.assignments)
  picked = [int(np.flatnonzero((np.asarray(plans) == a).all(1))[0]) for a in ran[1:]]
  assert len(set(picked)) > 1  # the untrained net's choice moves with the readings
  np.testing.assert_array_equal(
      np.asarray(samples.violated)[np.arange(39), picked], violations(trace)[1:]
  )
  keys = jax.random.split(key, (40, 2))
  rollout = jax.jit(train_selector._policy_rollout, static_argnames=("cfg",))
  explored = rollout(
      ctx, params.replace(name=""), plans, net_params, keys[:, 0], keys[:, 1],
      dataclasses.replace(cfg, explore=1.0),
  )  # fmt: skip
  assert not np.array_equal(np.asarray(explored[2]), ran)  # random plans, not the selector's


def test_dagger_rounds_add_the_policys_own_samples(spec):
  params, ctx = deployment("contention", OPS, spec)
  plans = planned_candidates(ctx)
  cfg = train_selector.SelectorConfig(
      steps=20, batch_size=16, hidden=8, episodes_per_scenario=1, episode_steps=30,
      dagger_rounds=1,
  )  # fmt: skip
  result, samples = train_selector.train_dagger(ctx, [params], [plans], cfg)
  walk_only = train_selector.collect(ctx, [params], [plans], cfg)
  assert samples.cost.shape[0] == 2 * walk_only.cost.shape[0]
  np.testing.assert_array_equal(samples.cost[:29], walk_only.cost)  # round 0: the walk
  assert [h["round"] for h in result.history][-1] == 1
  with pytest.raises(ValueError, match="dagger_rounds"):
    train_selector.SelectorConfig(dagger_rounds=-1)
  with pytest.raises(ValueError, match="explore"):
    train_selector.SelectorConfig(explore=1.5)


def test_selector_checkpoint_round_trip(tmp_path, spec):
  net = SelectorNet(hidden=8)
  params = net.init(jax.random.key(1), example_features(2))
  policy_io.save(
      tmp_path / "p", params, model="toy", ops=OPS, hidden=8, config={}, kind="plan_selector"
  )
  restored, meta = policy_io.load(tmp_path / "p", OPS)
  assert meta["kind"] == "plan_selector"
  assert jax.tree.all(jax.tree.map(np.array_equal, params, restored))
  with pytest.raises(
      policy_io.PolicyCheckpointError, match="plan_selector network; this needs a per_op"
  ):
    policy_io.load(tmp_path / "p", OPS, kind="per_op")
  with pytest.raises(ValueError, match="kind"):
    policy_io.save(tmp_path / "q", params, model="toy", ops=OPS, hidden=8, config={}, kind="x")
