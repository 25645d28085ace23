import flax.linen as nn
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from aprec import Emulator
from aprec.emulator import pak
from aprec.sensitivity import probes
from aprec.sensitivity import measured
from aprec.sensitivity import methods as sensitivity
from aprec.emulator import batching
from aprec.emulator.formats import MODES, N_MODES


class TinyMLP(nn.Module):

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(jnp.tanh(nn.Dense(6)(x)))


class AttentionToy(nn.Module):

  @nn.compact
  def __call__(self, x):  # x: (B, T, 4)
    h = nn.Dense(4, use_bias=False)(x)
    scores = jnp.einsum("btd,bsd->bts", h, h)  # an op without a weight
    return nn.Dense(3)(jnp.tanh(scores).mean(1))


def _batches(shape, n=3, classes=3, seed=0):
  x = jax.random.normal(jax.random.key(seed), (n, *shape))
  y = jax.random.randint(jax.random.key(seed + 1), (n, shape[0]), 0, classes)
  return [(np.asarray(a), np.asarray(b)) for a, b in zip(x, y)]


@pytest.fixture(scope="module")
def mlp():
  batches = _batches((8, 5))
  model = TinyMLP()
  params = model.init(jax.random.key(2), batches[0][0])
  return model.apply, params, batches


def _direct_single_op(apply_fn, params, batches, loss_fn):
  """Δloss of every (op, mode), one assignment at a time, batch by batch."""
  emu = Emulator(apply_fn, params, batches[0][0])
  f = jax.jit(lambda p, x, t, m: loss_fn(emu(p, x, m), t))
  n = len(emu.ops)
  diffs = np.zeros((n, N_MODES, len(batches)))
  for b, (x, t) in enumerate(batches):
    base = float(f(params, x, t, jnp.zeros(n, jnp.int32)))
    for i in range(n):
      for m in range(N_MODES):
        modes = jnp.zeros(n, jnp.int32).at[i].set(m)
        diffs[i, m, b] = float(f(params, x, t, modes)) - base
  return diffs


@pytest.mark.parametrize("loss", ["ce", "kl"])
def test_perturbation_equals_one_assignment_at_a_time(mlp, loss):
  apply_fn, params, batches = mlp
  prof = sensitivity.analyze(apply_fn, params, batches, loss=loss, chunk_size=5)
  if loss == "kl":
    probs = [np.asarray(jax.nn.softmax(apply_fn(params, x))) for x, _ in batches]
    batches = [(x, p) for (x, _), p in zip(batches, probs)]
  obj = sensitivity.objective(loss)
  diffs = _direct_single_op(apply_fn, params, batches, obj.loss_fn)
  est = prof.estimates["perturbation"]
  np.testing.assert_allclose(est.delta_loss, diffs.mean(-1), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(est.stderr, diffs.std(-1, ddof=1) / np.sqrt(3), rtol=1e-3, atol=1e-6)
  assert prof.loss == loss and prof.n_batches == 3 and prof.batch_size == 8
  assert (est.delta_loss[:, 0] == 0).all()
  if loss == "kl":  # a KL is never negative (up to float32 rounding of the losses)
    assert (est.delta_loss > -1e-6).all() and est.delta_loss[:, -1].min() > 0


def test_sweep_compiles_once_for_all_chunks(mlp):
  apply_fn, params, batches = mlp
  xs, ys = sensitivity.stack_batches(batches)
  emu = Emulator(apply_fn, params, xs[0])
  rows = sensitivity.single_op_assignments(len(emu.ops))
  assert rows.shape == (1 + 2 * 6, 2) and rows[1:7, 0].tolist() == list(range(1, 7))
  seen = []
  losses = sensitivity.batch_losses(
      emu, params, xs, ys, rows, chunk_size=4, progress=lambda *a: seen.append(a)
  )
  assert losses.shape == (len(rows), 3)
  assert seen[-1] == ("assignments", len(rows), len(rows)) and len(seen) == 4
  fn = measured._loss_fn(emu, sensitivity.cross_entropy)
  mesh = jax.sharding.Mesh(np.array(jax.devices()), (batching.AXIS,))
  assert batching._compiled(fn, 1, True, mesh)._cache_size() == 1


def test_mode_deltas_reproduce_the_pak():
  x = jax.random.normal(jax.random.key(0), (4, 5))
  w = jax.random.normal(jax.random.key(1), (5, 3))
  emu = Emulator(lambda p, x: x @ p, w, x)
  outputs, d = jax.jit(lambda p, x: probes.mode_deltas(emu, p, x))(w, x)
  exact = x @ w
  for m, name in enumerate(MODES):
    ref = pak.dot_general(x, w, m, (((1,), (0,)), ((), ())))
    np.testing.assert_allclose(exact + d.output[0][m], ref, rtol=1e-6, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(jax.jit(emu)(w, x, jnp.array([m])), ref, rtol=1e-6, atol=1e-6)
  assert d.rhs[0].shape == (N_MODES, 5, 3) and not np.asarray(d.lhs[0][0]).any()
  shifted = probes.run(
      emu, w, x, output_shifts=[jnp.ones((4, 3))], operand_shifts=[(jnp.ones((4, 5)), None)]
  )
  np.testing.assert_allclose(shifted, (x + 1) @ w + 1, rtol=1e-6)


def test_taylor_and_fisher_match_the_hand_derived_case():
  batch = 6
  x = np.asarray(jax.random.normal(jax.random.key(0), (batch, 5)))
  w = np.asarray(jax.random.normal(jax.random.key(1), (5, 3)))
  y = np.array([0, 1, 2, 0, 1, 2])
  emu = Emulator(lambda p, x: x @ p, w, x)
  est, sq = sensitivity.gradient(emu, w, x[None], y[None])
  logits = (x @ w).astype(np.float64)
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  g = (p - np.eye(3)[y]) / batch  # ∂ mean CE / ∂ logits
  for m, name in enumerate(MODES):
    delta = np.asarray(pak.dot_general(x, w, m, (((1,), (0,)), ((), ()))), np.float64) - x @ w
    assert est["taylor"].delta_loss[0, m] == pytest.approx(
        abs(np.sum(g * delta)), rel=1e-3, abs=1e-9
    ), name
    assert est["fisher"].delta_loss[0, m] == pytest.approx(
        0.5 * batch * np.sum(g**2 * delta**2), rel=1e-3, abs=1e-12
    ), name
  assert np.isnan(est["taylor"].stderr).all()  # one batch: no error estimate
  assert sq.shape == (1, N_MODES, 2) and sq[0, 0].tolist() == [0.0, 0.0]


def test_hutchinson_trace_matches_the_exact_hessian_trace():
  batches = _batches((4, 3), n=2)
  model = TinyMLP()
  params = model.init(jax.random.key(5), batches[0][0])
  xs, ys = sensitivity.stack_batches(batches)
  emu = Emulator(model.apply, params, xs[0])
  loss = sensitivity.cross_entropy
  zeros = probes.zero_operand_shifts(emu)
  flat, unravel = jax.flatten_util.ravel_pytree(zeros)
  hessian = jax.jit(
      jax.hessian(lambda v, x, y: loss(probes.run(emu, params, x, operand_shifts=unravel(v)), y))
  )
  diagonal = np.mean([np.diag(hessian(flat, x, y)) for x, y in zip(xs, ys)], 0)
  # Each operand's trace: the sum of its stretch of the diagonal.
  sizes = [z.size for pair in zeros for z in pair]
  exact = np.array([d.sum() for d in np.split(diagonal, np.cumsum(sizes)[:-1])]).reshape(-1, 2)
  got = probes.hutchinson_traces(
      emu, params, xs, ys, loss, rtol=0.05, probes_per_round=64, max_probes=1024, seed=0
  )
  # Tolerance: it stops at a 5 % relative standard error; the estimate must lie within
  # 4 standard errors (so within 20 %) of the exact trace.
  assert got["converged"] and got["probes"] <= 1024
  assert np.all(np.abs(got["trace"] - exact) <= 4 * got["stderr"])
  np.testing.assert_allclose(got["trace"], exact, rtol=0.2)


@pytest.fixture(scope="module")
def attention_profile():
  batches = _batches((5, 3, 4))
  model = AttentionToy()
  params = model.init(jax.random.key(3), batches[0][0])
  prof = sensitivity.analyze(
      model.apply,
      params,
      batches,
      methods="all",
      loss="kl",
      hessian_max_probes=64,
      label_samples=2,
      model_name="toy",
      dataset="random",
  )
  return prof


@pytest.mark.slow  # ~15 s cold: every method compiles its own program
def test_all_methods_with_fallbacks_for_the_weightless_op(attention_profile):
  prof = attention_profile
  assert list(prof.estimates) == list(sensitivity.METHODS) and prof.method == "perturbation"
  assert [op.has_weight for op in prof.ops] == [True, False, True]
  for name, est in prof.estimates.items():
    assert np.isfinite(est.delta_loss).all(), name
    assert (est.delta_loss[:, 0] == 0).all(), name
    assert est.delta_loss[1, MODES.index("int4")] > 0, name  # the weightless op too
  assert (prof.table("hessian") >= 0).all()  # Hessian of a KL at its minimum: PSD
  assert prof.details["hessian"]["fallback_ops"] == [prof.ops[1].name]
  assert prof.details["tracked"]["fallback_ops"] == [prof.ops[1].name]
  np.testing.assert_array_equal(prof.table("tracked")[1], prof.table("fisher")[1])
  assert prof.details["tracked"]["steps"] == 3 * 2  # batches x label draws
  assert set(prof.details["seconds"]) == {*sensitivity.METHODS, "gradient_pass"}
  assert prof.details["seconds"]["fisher"] >= prof.details["seconds"]["gradient_pass"]


def test_hessian_combines_traces_with_rounding_errors():
  batches = _batches((5, 3, 4), n=2)
  model = AttentionToy()
  params = model.init(jax.random.key(3), batches[0][0])
  xs, ys = sensitivity.stack_batches(batches)
  emu = Emulator(model.apply, params, xs[0])
  sq = np.random.default_rng(0).uniform(size=(3, N_MODES, 2))
  sq[:, 0] = 0
  est, details = sensitivity.hessian(emu, params, xs, ys, sq, max_probes=16)
  sizes = np.array([[np.prod(op.lhs_shape), np.prod(op.rhs_shape)] for op in emu.ops])
  expected = 0.5 * (details["trace"] / sizes)[:, None, :] * sq
  np.testing.assert_allclose(est.delta_loss, expected.sum(-1), rtol=1e-12)
  np.testing.assert_allclose(
      details["weights_only"], expected[:, :, 1] * [[1], [0], [1]], rtol=1e-12
  )
  assert details["fallback_ops"] == [emu.ops[1].name] and details["probes"] == 16
  assert est.n_samples == 16 and (est.stderr >= 0).all()


def test_parse_methods():
  assert sensitivity.parse_methods("all") == tuple(sensitivity.METHODS)
  assert sensitivity.parse_methods(["fisher", "taylor", "fisher"]) == ("fisher", "taylor")
  with pytest.raises(ValueError, match=r"unknown sensitivity method\(s\) \['gradient'\]"):
    sensitivity.parse_methods("perturbation,gradient")
  with pytest.raises(ValueError, match="choose from"):
    sensitivity.parse_methods("")


def test_bad_inputs_raise_clear_errors(mlp):
  apply_fn, params, batches = mlp
  x, y = batches[0]
  cases = [
      ([], "at least one"),
      ([(x, y[:5])], r"batch 0 has 8 inputs but 5 labels"),
      ([(x, y), (x[:4], y[:4])], r"batch 1 has shapes \(4, 5\)/\(4,\) but batch 0"),
      ([x], "batch 0 must be an"),
  ]
  for bad, match in cases:
    with pytest.raises(ValueError, match=match):
      sensitivity.analyze(apply_fn, params, bad)
  with pytest.raises(ValueError, match="unknown loss 'mse'"):
    sensitivity.analyze(apply_fn, params, batches, loss="mse")
  with pytest.raises(ValueError, match="unknown sensitivity method"):
    sensitivity.analyze(apply_fn, params, batches, methods="magic")
  per_example = lambda logits, y: jnp.sum(logits, -1)
  with pytest.raises(ValueError, match=r"must return a scalar.*\(8,\)"):
    sensitivity.analyze(apply_fn, params, batches, loss_fn=per_example)
  nan_batches = [(x, y), (np.full_like(x, np.nan), y)]
  with pytest.raises(ValueError, match="fp32 loss of calibration batch 1 is nan"):
    sensitivity.analyze(apply_fn, params, nan_batches, loss="ce")
  with pytest.raises(ValueError, match="batch_size must be in 1..3"):
    batching.split(x[:3], y[:3], 4)


def test_kl_on_a_regression_model_raises_and_a_given_loss_works():
  model = nn.Sequential([nn.Dense(6), nn.relu, nn.Dense(1)])  # one output: a regression
  batches = [(x, np.asarray(x[:, :1])) for x, _ in _batches((8, 5))]
  params = model.init(jax.random.key(0), batches[0][0])
  with pytest.raises(ValueError, match=r"loss='kl'.*shape \(8, 1\).*pass a loss"):
    sensitivity.analyze(model.apply, params, batches)
  mse = lambda out, target: jnp.mean(jnp.square(out - target))
  prof = sensitivity.analyze(model.apply, params, batches, loss_fn=mse)
  assert prof.loss == "custom" and prof.delta_loss[:, -1].min() > 0  # int4 costs something
