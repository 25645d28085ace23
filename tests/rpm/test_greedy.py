"""Tests for aprec/rpm/greedy.py: the seed's pseudocode, step by step, on a hand-built case."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aprec.emulator.formats import MODE_BITS, mode_index
from aprec.rpm.context import LADDER, make_context
from aprec.rpm.greedy import Greedy
from op_tables import dot

FP16 = mode_index("fp16")


class Reading(NamedTuple):
  power_w: jax.Array
  power_cap_w: jax.Array
  buffer_occupancy: jax.Array


def seed_reference(modes, sens, share, power, cap, occupancy, thr_p=0.95, thr_b=0.9):
  """The seed's loop body, written plainly in Python."""
  modes = list(modes)
  if power > thr_p * cap or occupancy > thr_b:
    best, best_score = None, -np.inf
    for i, m in enumerate(modes):
      pos = LADDER.index(m)
      if pos == len(LADDER) - 1:
        continue  # cannot go lower
      lower = LADDER[pos + 1]
      resource = share[i] * MODE_BITS[m] / 32
      score = resource / (sens[i][lower] + 1e-6)
      if score > best_score:
        best, best_score = i, score
    if best is not None:
      modes[best] = LADDER[LADDER.index(modes[best]) + 1]
  return modes


def test_greedy_follows_the_seed_step_by_step(spec):
  ops = [dot(4, 64, 64, "a"), dot(4, 64, 256, "b"), dot(4, 256, 10, "c")]
  sens = np.array(
      [
          [0, 0.01, 0.01, 0.02, 0.03, 0.05, 0.2],
          [0, 0.001, 0.001, 0.004, 0.01, 0.006, 0.05],
          [0, 0.05, 0.05, 0.1, 0.2, 0.15, 0.9],
      ]
  )
  ctx = make_context(ops, spec, sens, step_period_s=1e-5)
  share = 0.5 * (np.asarray(ctx.macs_share) + np.asarray(ctx.bytes_share))
  policy = Greedy()
  state = policy.init(ctx, jnp.full(3, FP16))
  modes = [FP16] * 3
  # power over, calm, buffer over, NaN power (the seed does nothing), then over again
  readings = [
      (2.0, 1.0, 0.1),
      (2.0, 1.0, 0.1),
      (0.5, 1.0, 0.2),
      (0.5, 1.0, 0.95),
      (np.nan, 1.0, 0.1),
  ] + [(3.0, 1.0, 0.1)] * 14
  step = jax.jit(policy.__call__)
  for power, cap, occ in readings:
    m = Reading(
        power_w=jnp.float32(power), power_cap_w=jnp.float32(cap), buffer_occupancy=jnp.float32(occ)
    )
    state, got = step(state, m, jax.random.key(0))
    modes = seed_reference(modes, sens, share, power, cap, occ)
    assert np.asarray(got).tolist() == modes
  assert modes == [mode_index("int4")] * 3  # it only ever lowers, down to the ladder's end


def test_greedy_restore_raises_after_calm_steps(spec):
  ops = [dot(4, 64, 64, "a"), dot(4, 64, 256, "b")]
  ctx = make_context(ops, spec, np.tile([0, 0.01, 0.01, 0.02, 0.03, 0.05, 0.2], (2, 1)), 1e-5)
  policy = Greedy(restore=True, patience_steps=3)
  state = policy.init(ctx, jnp.full(2, mode_index("int8")))
  calm = Reading(
      power_w=jnp.float32(0.1), power_cap_w=jnp.float32(1.0), buffer_occupancy=jnp.float32(0.1)
  )
  history = []
  for _ in range(40):
    state, a = policy(state, calm, jax.random.key(0))
    history.append(np.asarray(a).tolist())
  assert history[1] == history[0]  # hysteresis: nothing moves before patience runs out
  assert history[-1] == [FP16, FP16]  # back up to the ceiling, no further
