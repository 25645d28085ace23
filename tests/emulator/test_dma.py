import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aprec import Emulator
from aprec.emulator import dma
from aprec.emulator import formats
from aprec.emulator.formats import MODE_TABLE

weights = hnp.arrays(
    np.float32,
    # A few fixed shapes (odd and even element counts, one channel and several): values vary
    # freely, while eager JAX compiles each primitive once per shape rather than per example.
    st.sampled_from([(1, 3), (3, 4), (2, 1)]),
    elements=st.floats(-100, 100, width=32),
)


@settings(max_examples=12, deadline=None)
@given(w=weights)
def test_pack_unpack_round_trips_bit_exactly(w):
  for m, spec in enumerate(MODE_TABLE):
    packed = dma.pack(w, m, channel_axes=(1,))
    values, scale = dma.unpack(packed)
    ref_values, ref_scale = formats.quantize(jnp.asarray(w), m, (0,))
    assert np.array_equal(np.asarray(values), np.asarray(ref_values)), spec.name
    if spec.scaled:
      assert np.array_equal(np.asarray(scale), np.asarray(ref_scale)), spec.name


@settings(max_examples=12, deadline=None)
@given(w=weights)
def test_byte_counts_are_the_arrays_nbytes(w):
  n, channels = w.size, w.shape[1]
  expected = {
      "fp32": 4 * n,
      "bf16": 2 * n,
      "fp16": 2 * n,
      "fp8_e4m3": n + 4 * channels,
      "fp8_e5m2": n + 4 * channels,
      "int8": n + 4 * channels,
      "int4": (n + 1) // 2 + 4 * channels,
  }
  for name, nbytes in expected.items():
    packed = dma.pack(w, name, channel_axes=(1,))
    assert (
        packed.nbytes == nbytes == np.asarray(packed.data).nbytes + np.asarray(packed.scale).nbytes
    )


def test_int4_nibble_layout_matches_numpy():
  values = np.array([-7, 7, 0, -1, 3, -8 + 1, 5], np.int8)
  packed = np.asarray(dma.pack_int4(jnp.asarray(values)))
  padded = np.append(values, 0).astype(np.uint8) & 0x0F
  assert packed.tolist() == (padded[0::2] | (padded[1::2] << 4)).tolist()
  assert np.asarray(dma.unpack_int4(jnp.asarray(packed), len(values))).tolist() == values.tolist()


def test_bad_channel_axes():
  with pytest.raises(ValueError, match="channel_axes"):
    dma.pack(jnp.ones((2, 3)), "int8", channel_axes=(2,))


def test_emulator_runs_from_stored_weights():
  w1 = jax.random.normal(jax.random.key(0), (6, 5))
  w2 = jax.random.normal(jax.random.key(1), (5, 3))
  params = {"a": {"kernel": w1}, "b": {"kernel": w2}}
  f = lambda p, x: jnp.tanh(x @ p["a"]["kernel"]) @ p["b"]["kernel"]
  x = jax.random.normal(jax.random.key(2), (4, 6))
  emu = Emulator(f, params, x)
  for name in ("int4", "int8", "fp8_e4m3", "bf16"):
    modes = emu.assignment(name)
    stored = emu.store_weights(params, modes)
    from_storage = jax.jit(lambda s, m: emu(params, x, m, stored_weights=s))(stored, modes)
    np.testing.assert_allclose(from_storage, emu(params, x, modes), rtol=1e-5, atol=1e-6)
  fp32_bytes = dma.storage_bytes(emu.store_weights(params, emu.assignment("fp32")))
  int4_bytes = dma.storage_bytes(emu.store_weights(params, emu.assignment("int4")))
  assert fp32_bytes == 4 * (30 + 15)
  assert int4_bytes == 15 + 8 + 4 * (5 + 3)  # nibbles + per-channel float32 scales


def test_digits_weights_at_int4_are_an_eighth_plus_scales():
  from aprec import models

  model = models.load("digits_cnn")
  emu = Emulator(model.apply_fn, model.params, model.data.test.x[:8])
  fp32 = emu.store_weights(model.params, emu.assignment("fp32"))
  int4 = emu.store_weights(model.params, emu.assignment("int4"))
  data = sum(int(np.asarray(p.data).nbytes) for p in int4)
  scales = sum(int(np.asarray(p.scale).nbytes) for p in int4)
  assert data * 8 == pytest.approx(dma.storage_bytes(fp32), abs=8 * len(emu.ops))
  assert scales == 4 * sum(op.out_shape[-1] for op in emu.ops)
