import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aprec import Emulator
from aprec.emulator import formats
from aprec.sensitivity import tracker
from aprec.emulator.formats import MODES


def _grads(n, seed=0):
  rng = np.random.default_rng(seed)
  return [
      {
          "w": rng.normal(size=(3, 2)).astype(np.float32),
          "b": rng.normal(size=(2,)).astype(np.float32),
      }
      for _ in range(n)
  ]


def test_statistics_equal_a_direct_computation():
  grads = _grads(6)
  step = jax.jit(tracker.update)
  state = tracker.init({"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)})
  for g in grads:
    state = step(state, g, 8)
  stats = tracker.statistics(state)
  for key in ("w", "b"):
    g = np.stack([x[key] for x in grads]).astype(np.float64)
    np.testing.assert_allclose(stats.mean[key], g.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats.mean_sq[key], (g**2).mean(0), rtol=1e-5)
    np.testing.assert_allclose(state.mean_fourth[key], (g**4).mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.variance[key], g.var(0), rtol=1e-4, atol=1e-6)
  assert int(state.steps) == 6 and float(state.examples) == 48.0


def test_update_runs_inside_scan_like_a_loop():
  grads = _grads(5, seed=1)
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *grads)
  init = tracker.init(grads[0])
  scanned, _ = jax.lax.scan(lambda s, g: (tracker.update(s, g), None), init, stacked)
  looped = init
  for g in grads:
    looped = tracker.update(looped, g)
  for a, b in zip(jax.tree.leaves(scanned), jax.tree.leaves(looped)):
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_bad_gradients_are_rejected():
  state = tracker.init({"w": jnp.zeros((3, 2))})
  with pytest.raises(ValueError, match="structure of the tracked params"):
    tracker.update(state, {"v": jnp.zeros((3, 2))})
  with pytest.raises(ValueError, match=r"shape \(2, 3\).*\(3, 2\)"):
    tracker.update(state, {"w": jnp.zeros((2, 3))})


class _AttentionToy(nn.Module):

  @nn.compact
  def __call__(self, x):  # x: (B, T, 4)
    h = nn.Dense(4, use_bias=False)(x)
    scores = jnp.einsum("btd,bsd->bts", h, h)  # an op without a weight
    return nn.Dense(3)(scores.mean(1))


def test_estimate_is_half_batch_fisher_times_squared_weight_error():
  x = jax.random.normal(jax.random.key(0), (5, 3, 4))
  model = _AttentionToy()
  params = model.init(jax.random.key(1), x)
  emu = Emulator(model.apply, params, x)
  assert [op.has_weight for op in emu.ops] == [True, False, True]
  grads = _grads(3, seed=2)
  state = tracker.init(params)
  for g in grads:
    fake = jax.tree.map(lambda p: jnp.full(p.shape, g["w"][0, 0], jnp.float32), params)
    state = tracker.update(state, fake, batch_size=5)
  mean, err, covered = tracker.estimate(state, emu, params, x)
  assert covered == (True, False, True)
  assert np.isnan(mean[1]).all() and np.isfinite(mean[[0, 2]]).all()
  g2 = np.mean([g["w"][0, 0] ** 2 for g in grads])
  w = np.asarray(params["params"]["Dense_1"]["kernel"])  # (T=3, 3): per output channel
  for m, name in enumerate(MODES):
    values, scale = formats.quantize(jnp.asarray(w), m, (0,))
    dw2 = np.sum((np.asarray(values * scale) - w) ** 2)
    assert mean[2, m] == pytest.approx(0.5 * 5 * g2 * dw2, rel=1e-5, abs=1e-12), name
  assert mean[2, 0] == 0 and mean[2, MODES.index("int4")] > mean[2, MODES.index("int8")]
  assert (err[[0, 2]] >= 0).all()


def test_estimate_needs_two_steps():
  x = jnp.ones((2, 3, 4))
  model = _AttentionToy()
  params = model.init(jax.random.key(1), x)
  with pytest.raises(ValueError, match="at least two steps"):
    tracker.estimate(tracker.init(params), Emulator(model.apply, params, x), params, x)
