"""Models whose inputs are pytrees, through analysis, validation, planning and the RPM, and
the high-level workflow (issue 9, items 1 and 4)."""

import jax
import numpy as np
import pytest
from flax import linen as nn

import aprec
from aprec.emulator import inputs as inputs_lib
from aprec.sensitivity import validation
from aprec.sensitivity.methods import stack_batches


class TwoInputs(nn.Module):
  """Logits from an image-like input and a side vector, given as a tuple or a dict."""

  @nn.compact
  def __call__(self, inputs):
    a, b = (inputs["a"], inputs["b"]) if isinstance(inputs, dict) else inputs
    h = nn.relu(nn.Dense(8)(a) + nn.Dense(8)(b))
    return nn.Dense(3)(h)


def _data(n=48, kind="tuple"):
  rng = np.random.default_rng(0)
  a = rng.normal(size=(n, 5)).astype(np.float32)
  b = rng.normal(size=(n, 2)).astype(np.float32)
  x = {"a": a, "b": b} if kind == "dict" else (a, b)
  return x, (a[:, 0] > 0).astype(np.int32) + (b[:, 0] > 0).astype(np.int32)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tuple", "dict"])
def test_pytree_inputs_through_analyze_validate_plan_and_rpm(kind):
  x, y = _data(kind=kind)
  module = TwoInputs()
  params = module.init(jax.random.key(0), inputs_lib.take(x, slice(0, 2)))
  model = aprec.own_model(module.apply, params, inputs=x, targets=y, name=f"two_{kind}")
  profile = aprec.analyze_model(model, methods="perturbation,fisher", batch_size=4)
  assert profile.delta_loss.shape == (3, len(aprec.MODES)) and profile.batch_size == 4
  assert profile.numerics == {
      "activation_scaling": model_emulator(model).numerics["activation_scaling"],
      "ste": "identity",
  }
  test = model.data.test
  batches = [(inputs_lib.take(test.x, slice(i, i + 4)), test.y[i : i + 4]) for i in (0, 4)]
  v = validation.validate(profile, model.apply_fn, model.params, batches, n_assignments=4)
  assert np.isfinite(v.measured_single).all()
  planned = aprec.plan(profile, "bits=8")
  assert planned.used <= 8
  d = aprec.deploy(model, profile, batch_size=4)
  result = aprec.run(d, steps=6, baselines=("static_fp16", "greedy"))
  assert [r["policy"] for r in result.rows] == ["static_fp16", "greedy"]
  assert result.reference["fp32_accuracy"] == pytest.approx(_accuracy(model, d))


def model_emulator(model):
  return aprec.Emulator(model.apply_fn, model.params, model.data.val.x)


def _accuracy(model, d):
  """fp32 accuracy on the deployment's batches, straight from apply_fn."""
  n = len(d.batches.y) * d.batch_size
  x = inputs_lib.take(model.data.test.x, slice(0, n))
  logits = model.apply_fn(model.params, x)
  return float(np.mean(np.argmax(logits, -1) == model.data.test.y[:n]))


def test_leaves_that_disagree_on_the_batch_are_refused_first():
  x, y = _data()
  bad = (x[0], x[1][:-1])
  with pytest.raises(ValueError, match=r"disagree on the batch size \(\[0\] has 48, \[1\] has 47"):
    stack_batches([(bad, y)])
  with pytest.raises(ValueError, match="disagree"):
    aprec.own_model(TwoInputs().apply, {}, inputs=bad, targets=y)


def test_a_profile_made_with_other_scaling_is_refused():
  x, y = _data()
  module = TwoInputs()
  params = module.init(jax.random.key(0), inputs_lib.take(x, slice(0, 2)))
  model = aprec.own_model(module.apply, params, inputs=x, targets=y)
  profile = aprec.analyze_model(model, batch_size=4, activation_scaling="per_example")
  assert profile.numerics["activation_scaling"] == "per_example"
  with pytest.raises(aprec.sensitivity.ProfileError, match="activation_scaling='per_example'"):
    aprec.deploy(model, profile, batch_size=4)
