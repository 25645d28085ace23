import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aprec.sensitivity import methods as sensitivity
from aprec.sensitivity import validation
from aprec.emulator.formats import MODES
from aprec.sensitivity.profile import ProfileError


def test_spearman_pearson_r2_against_references():
  rng = np.random.default_rng(0)
  a = rng.normal(size=40)
  b = a + rng.normal(size=40)
  ties = np.round(a * 2) / 2  # many tied values
  scipy_stats = pytest.importorskip("scipy.stats")
  for x, y in [(a, b), (ties, b), (ties, np.round(b))]:
    assert validation.spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y)[0], abs=1e-12)
    assert validation.pearson(x, y) == pytest.approx(scipy_stats.pearsonr(x, y)[0], abs=1e-12)
  assert validation.rankdata([3, 1, 3, 2]).tolist() == [3.5, 1.0, 3.5, 2.0]
  assert validation.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
  assert np.isnan(validation.spearman([1, 1, 1], [1, 2, 3]))
  assert validation.r2([1, 2, 3], [1, 2, 3]) == 1.0
  assert validation.r2([2, 2, 2], [1, 2, 3]) == 0.0  # predicting the mean
  assert validation.r2([3, 2, 1], [1, 2, 3]) == -3.0
  with pytest.raises(ValueError, match="equal-length"):
    validation.r2([1, 2], [1, 2, 3])


def test_random_mixed_assignments_and_additive_prediction():
  rows = validation.random_mixed_assignments(5, 200, seed=1)
  assert rows.shape == (200, 5) and rows.dtype == np.int32
  lowered = (rows > 0).sum(1)
  assert lowered.min() >= 1 and lowered.max() == 5 and rows.max() == len(MODES) - 1
  assert np.array_equal(rows, validation.random_mixed_assignments(5, 200, seed=1))
  table = np.arange(10 * len(MODES), dtype=float).reshape(10, len(MODES))[:5]
  assert validation.additive_prediction(table, rows[:1])[0] == table[np.arange(5), rows[0]].sum()
  with pytest.raises(ValueError, match="n_ops > 0"):
    validation.random_mixed_assignments(0, 3)


class TinyMLP(nn.Module):

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(jnp.tanh(nn.Dense(6)(x)))


@pytest.fixture(scope="module")
def model():
  x = jax.random.normal(jax.random.key(0), (3, 8, 5))
  y = jax.random.randint(jax.random.key(1), (3, 8), 0, 3)
  batches = [(np.asarray(a), np.asarray(b)) for a, b in zip(x, y)]
  module = TinyMLP()
  params = module.init(jax.random.key(2), batches[0][0])
  prof = sensitivity.analyze(module.apply, params, batches, methods="perturbation")
  return module.apply, params, batches, prof


def test_validation_on_the_calibration_data_is_perfect_for_perturbation(model, tmp_path):
  from aprec.app import figures as sensitivity_plots

  apply_fn, params, batches, prof = model
  noisy = prof.delta_loss + np.random.default_rng(0).normal(size=prof.delta_loss.shape)
  val = validation.validate(
      prof,
      apply_fn,
      params,
      batches,
      n_assignments=16,
      extra_tables={"noisy": noisy},
      dataset="same",
  )
  np.testing.assert_allclose(val.measured_single, prof.delta_loss, rtol=1e-5, atol=1e-7)
  s = val.scores["perturbation"]
  assert s.spearman_single_op == pytest.approx(1.0) and s.n_pairs == 2 * (len(MODES) - 1)
  assert s.n_assignments == 16 and -1 <= s.spearman_additive <= 1
  assert val.scores["noisy"].spearman_single_op < 0.9
  assert val.loss == "kl" and val.summary()["scores"]["noisy"]["method"] == "noisy"
  # The additive prediction of one lowered op is that op's own entry.
  single = (val.assignments > 0).sum(1) == 1
  np.testing.assert_allclose(
      val.predicted_additive["perturbation"][single],
      val.measured_additive[single],
      rtol=1e-4,
      atol=1e-7,
  )
  path = sensitivity_plots.scatter(val, tmp_path / "scatter.png", model="tiny")
  assert path.read_bytes()[:4] == b"\x89PNG"


def test_measure_assignments_equals_a_direct_loop(model):
  apply_fn, params, batches, prof = model
  rows = np.array([[6, 0], [3, 5], [0, 0]], np.int32)
  mean, err, shape = validation.measure_assignments(apply_fn, params, batches, rows, loss="ce")
  from aprec import Emulator

  emu = Emulator(apply_fn, params, batches[0][0])
  f = jax.jit(lambda m, x, y: sensitivity.cross_entropy(emu(params, x, m), y))
  direct = np.array([[float(f(r, x, y) - f(rows[2], x, y)) for x, y in batches] for r in rows])
  np.testing.assert_allclose(mean, direct.mean(1), rtol=1e-4, atol=1e-7)
  assert shape == (3, 8) and mean[2] == 0 and err.shape == (3,)


def test_validation_rejects_another_model_and_bad_arguments(model):
  apply_fn, params, batches, prof = model
  other = TinyMLP().init(jax.random.key(0), batches[0][0][:, :4])
  narrow = [(x[:, :4], y) for x, y in batches]
  with pytest.raises(ProfileError, match=r"'Dense_1': weight_shape is \[5, 6\] in the profile"):
    validation.validate(prof, apply_fn, other, narrow)
  with pytest.raises(ValueError, match="n_assignments must be >= 2"):
    validation.validate(prof, apply_fn, params, batches, n_assignments=1)
  with pytest.raises(ValueError, match="unknown precision mode 'int3'"):
    validation.validate(prof, apply_fn, params, batches, pair_modes=("int3",))
