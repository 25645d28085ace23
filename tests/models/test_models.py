"""Tests for aprec.models: the shipped, trained reference models."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from aprec import models
from aprec.models import metrics

MIN_TEST_ACCURACY = {"digits_cnn": 0.97, "digits_vit": 0.95}


@pytest.fixture(scope="module", params=models.NAMES)
def loaded(request) -> models.LoadedModel:
  return models.load(request.param)


def test_names():
  assert models.NAMES == ("digits_cnn", "digits_vit")


def test_accuracy_matches_metadata(loaded):
  loss, acc = metrics.evaluate(loaded.apply_fn, loaded.params, loaded.data.test)
  assert acc >= MIN_TEST_ACCURACY[loaded.name]
  assert abs(acc - loaded.metadata["test_accuracy_fp32"]) <= 1e-6
  assert loss == pytest.approx(loaded.metadata["test_loss_fp32"], rel=1e-5)
  assert loaded.metadata["model"] == loaded.name
  assert loaded.metadata["data"]["test_size"] == len(loaded.data.test.y) == 360


def test_params_are_float32_jax_arrays(loaded):
  leaves = jax.tree.leaves(loaded.params)
  assert leaves and all(isinstance(a, jax.Array) and a.dtype == jnp.float32 for a in leaves)
  assert sum(a.size for a in leaves) == loaded.metadata["num_params"]
  abstract = models.build(loaded.name, abstract=True)[1]
  assert jax.tree.structure(abstract) == jax.tree.structure(loaded.params)


def test_apply_fn_under_transformations(loaded):
  x = jnp.asarray(loaded.data.test.x[:4])
  logits = jax.jit(loaded.apply_fn)(loaded.params, x)
  assert logits.shape == (4, 10) and logits.dtype == jnp.float32
  per_image = jax.jit(jax.vmap(loaded.apply_fn, (None, 0)))(loaded.params, x)
  np.testing.assert_allclose(per_image, logits, rtol=1e-5, atol=1e-5)
  jaxpr = jax.make_jaxpr(loaded.apply_fn)(loaded.params, x)
  assert "dot_general" in str(jaxpr)

  def loss(params):
    return metrics.cross_entropy(loaded.apply_fn(params, x), jnp.asarray(loaded.data.test.y[:4]))

  grads = jax.jit(jax.grad(loss))(loaded.params)
  assert jax.tree.structure(grads) == jax.tree.structure(loaded.params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


def test_cnn_is_linen_variables_dict():
  loaded = models.load("digits_cnn")
  assert set(loaded.params) == {"params"}
  assert set(loaded.params["params"]) == {"Conv_0", "Conv_1", "Dense_0", "Dense_1"}


def test_vit_state_paths():
  loaded = models.load("digits_vit")
  assert isinstance(loaded.params, nnx.State)
  paths = {"/".join(map(str, path)) for path, _ in nnx.to_flat_state(loaded.params)}
  assert {
      "blocks/0/attn/query/kernel",
      "blocks/1/mlp_out/kernel",
      "patch_embed/kernel",
      "pos_embed",
      "head/kernel",
  } <= paths


def test_unknown_name():
  with pytest.raises(ValueError, match="digits_cnn, digits_vit"):
    models.load("resnet50")
  with pytest.raises(ValueError, match="known models"):
    models.build("resnet50")


def test_missing_checkpoint(tmp_path, monkeypatch):
  with pytest.raises(FileNotFoundError, match="train_models.py"):
    models.load("digits_cnn", checkpoint_dir=tmp_path)
  monkeypatch.setenv(models.CHECKPOINTS_ENV, str(tmp_path / "elsewhere"))
  with pytest.raises(FileNotFoundError, match="elsewhere"):
    models.load("digits_vit")
