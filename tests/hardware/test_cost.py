"""Tests for aprec/cost.py against an independent float64 NumPy reference."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aprec.hardware import cost
from aprec.hardware import specs as hardware
from aprec.hardware.cost import HardwareState
from op_tables import digits_ops, dot

# Written out here, not read from aprec.emulator.formats, so the reference is independent.
MODES = ("fp32", "bf16", "fp16", "fp8_e4m3", "fp8_e5m2", "int8", "int4")
BITS = (32, 16, 16, 8, 8, 8, 4)
SCALED = (False, False, False, True, True, True, True)


def ref_cost(ops, modes, spec, availability=1.0, free_bytes=None, clock_scale=1.0):
  """Float64 NumPy reference of the cost model's documented equations (hard assignment)."""
  free = float(spec.buffer_bytes) if free_bytes is None else free_bytes
  g = lambda name: np.asarray(getattr(spec, name), np.float64)
  out = {"latency": [], "energy": [], "dram": [], "working": []}
  for op, m in zip(ops, modes):
    per_el, scale = BITS[m] / 8, (4.0 if SCALED[m] else 0.0)
    channels = op.weight_elements / op.contraction_size if op.has_weight else 0.0
    w = op.weight_elements * per_el + scale * channels
    a = op.activation_elements * per_el + scale
    o = op.output_elements * per_el + scale
    ws = w + a + o
    fits = 1.0 / (1.0 + math.exp(-(free - ws) / (spec.buffer_softness * ws + 1.0)))
    sram, dram = fits * ws, (1.0 - fits) * ws
    rate = (
        g("num_pes")
        * g("clock_hz")
        * g("macs_per_pe_cycle")
        * clock_scale
        * max(availability, 1e-3)
        * g("relative_throughput")[m]
    )
    compute = op.macs / rate
    memory = dram / g("dram_bandwidth_bytes_per_s") + sram / g("sram_bandwidth_bytes_per_s")
    q = spec.roofline_sharpness
    latency = g("op_overhead_s") + (compute**q + memory**q) ** (1.0 / q)
    converted = (a + o) if BITS[m] < 32 else 0.0
    energy = (
        op.macs * g("energy_per_mac_j")[m]
        + sram * g("sram_energy_per_byte_j")
        + dram * g("dram_energy_per_byte_j")
        + converted * g("dma_conversion_energy_per_byte_j")
        + g("static_power_w") * latency
    )
    for key, value in zip(out, (latency, energy, dram, ws)):
      out[key].append(value)
  return {k: np.array(v) for k, v in out.items()}


def test_mode_constants_match_formats():
  from aprec.emulator import formats

  assert formats.MODES == MODES
  assert tuple(m.bits for m in formats.MODE_TABLE) == BITS
  assert tuple(m.scaled for m in formats.MODE_TABLE) == SCALED


@pytest.mark.parametrize("spec_name", ["edge_npu", "datacenter_gpu"])
@pytest.mark.parametrize("state", [(1.0, None, 1.0), (0.3, 20e3, 0.7), (0.0, 0.0, 1.0)])
def test_one_hot_matches_numpy_reference(spec_name, state):
  spec = hardware.get_spec(spec_name)
  ops = digits_ops() + [dot(64, 1, 64, "outer"), dot(128, 512, 128, "big")]
  availability, free, clock = state
  free = float(spec.buffer_bytes) if free is None else free
  rng = np.random.default_rng(0)
  with jax.enable_x64(True):
    for _ in range(3):
      modes = rng.integers(0, len(MODES), len(ops))
      got = cost.checked_cost(
          ops, modes.astype(np.int32), spec, HardwareState(availability, free, clock)
      )
      ref = ref_cost(ops, modes, spec, availability, free, clock)
      np.testing.assert_allclose(got.op_latency_s, ref["latency"], rtol=1e-10)
      np.testing.assert_allclose(got.op_energy_j, ref["energy"], rtol=1e-10)
      np.testing.assert_allclose(got.op_dram_bytes, ref["dram"], rtol=1e-9, atol=1e-6)
      np.testing.assert_allclose(got.op_working_set_bytes, ref["working"], rtol=1e-12)
      np.testing.assert_allclose(got.latency_s, ref["latency"].sum(), rtol=1e-10)
      np.testing.assert_allclose(
          got.power_w, ref["energy"].sum() / ref["latency"].sum(), rtol=1e-10
      )
      np.testing.assert_allclose(got.peak_buffer_bytes, ref["working"].max(), rtol=1e-12)
      np.testing.assert_allclose(
          got.buffer_occupancy, ref["working"].max() / max(free, 1.0), rtol=1e-12
      )


def test_soft_assignment_is_the_expectation():
  spec, ops = hardware.edge_npu(), digits_ops()
  probs = jax.nn.softmax(jax.random.normal(jax.random.key(0), (len(ops), len(MODES))))
  arrays, state = cost.op_arrays(ops), cost.nominal_state(spec)
  soft = cost.cost(arrays, probs, spec, state)
  per_mode = [
      cost.cost(arrays, cost.one_hot([m] * len(ops)), spec, state) for m in range(len(MODES))
  ]
  expected = sum(probs[:, m] * per_mode[m].op_energy_j for m in range(len(MODES)))
  np.testing.assert_allclose(soft.op_energy_j, expected, rtol=1e-5)


SPEC_FIELDS = (
    "dram_bandwidth_bytes_per_s",
    "sram_bandwidth_bytes_per_s",
    "clock_hz",
    "static_power_w",
    "dram_energy_per_byte_j",
    "op_overhead_s",
    "dma_conversion_energy_per_byte_j",
)


def test_gradients_match_finite_differences():
  spec = hardware.edge_npu().replace(op_overhead_s=1e-6)
  ops = digits_ops(b=64) + [dot(64, 1, 256, "outer")]
  rng = np.random.default_rng(1)
  probs = rng.dirichlet(np.ones(len(MODES)), size=len(ops))
  with jax.enable_x64(True):
    arrays = cost.op_arrays(ops)
    # A free buffer inside the fit gate of some ops, so the gate's gradient counts too.
    state = HardwareState(np.float64(0.6), np.float64(150e3), np.float64(0.9))

    @jax.jit
    def objective(p, s):
      c = cost.cost(arrays, p, s, state)
      return c.energy_j * 1e3 + c.latency_s * 1e3

    g_p, g_s = jax.jit(jax.grad(objective, argnums=(0, 1)))(probs, spec)
    central = lambda f, h: (f(h) - f(-h)) / (2 * h)
    eps = 1e-6
    for i, m in [(0, 0), (1, 5), (2, 6), (4, 2)]:

      def moved(h):
        p = probs.copy()
        p[i, m] += h
        return float(objective(p, spec))

      np.testing.assert_allclose(g_p[i, m], central(moved, eps), rtol=1e-6)
    for field in SPEC_FIELDS:
      v = float(getattr(spec, field))
      fd = central(lambda h: float(objective(probs, spec.replace(**{field: v + h}))), v * 1e-6)
      np.testing.assert_allclose(float(getattr(g_s, field)), fd, rtol=1e-5, err_msg=field)
    for field in ("relative_throughput", "energy_per_mac_j"):
      base = np.asarray(getattr(spec, field), np.float64)
      for m in (0, 2, 5):

        def moved(h):
          value = base.copy()
          value[m] += h
          return float(objective(probs, spec.replace(**{field: value})))

        np.testing.assert_allclose(
            float(getattr(g_s, field)[m]),
            central(moved, base[m] * 1e-6),
            rtol=1e-5,
            err_msg=f"{field}[{MODES[m]}]",
        )


@pytest.mark.parametrize("spec_name", ["edge_npu", "datacenter_gpu"])
def test_fewer_bits_never_cost_more_energy_or_bytes(spec_name):
  spec = hardware.get_spec(spec_name)
  # The GPU has no fast INT4 path (anchors: 1.2 TFLOP/s), so INT4 there costs more:
  # the one documented exception.
  modes = [
      m for m in range(len(MODES)) if not (spec_name == "datacenter_gpu" and MODES[m] == "int4")
  ]
  ops = digits_ops(b=64) + [dot(64, 1, 256, "outer"), dot(256, 2048, 256, "big")]
  arrays = cost.op_arrays(ops)
  states = [cost.nominal_state(spec), HardwareState(0.25, 0.1 * float(spec.buffer_bytes), 0.5)]
  for state, i in itertools.product(states, range(len(ops))):
    for hi, lo in itertools.product(modes, modes):
      if BITS[lo] >= BITS[hi]:
        continue
      base = np.full(len(ops), 2)
      a, b = base.copy(), base.copy()
      a[i], b[i] = hi, lo
      c_hi = cost.cost(arrays, cost.one_hot(a), spec, state)
      c_lo = cost.cost(arrays, cost.one_hot(b), spec, state)
      where = f"op {ops[i].name} {MODES[hi]} -> {MODES[lo]} in {state}"
      assert float(c_lo.energy_j) <= float(c_hi.energy_j) * (1 + 1e-6), where
      assert float(c_lo.dram_bytes) <= float(c_hi.dram_bytes) * (1 + 1e-6) + 1e-3, where
      assert float(c_lo.op_working_set_bytes[i]) < float(c_hi.op_working_set_bytes[i]), where


def test_roofline_regimes():
  spec = hardware.edge_npu()
  fp16 = cost.one_hot([2])
  compute_bound = cost.op_arrays([dot(256, 2048, 256)])  # K large: many MACs per byte
  memory_bound = cost.op_arrays([dot(4096, 1, 4096)])  # K = 1: one MAC per output element
  full = cost.nominal_state(spec)
  half_pes = full._replace(pe_availability=0.5)
  fast_dram = spec.replace(dram_bandwidth_bytes_per_s=2 * spec.dram_bandwidth_bytes_per_s)

  c = cost.cost(compute_bound, fp16, spec, full)
  assert float(c.op_compute_s[0]) > 3 * float(c.op_memory_s[0])
  assert float(c.latency_s) == pytest.approx(float(c.op_compute_s[0]), rel=0.01)
  assert float(c.op_compute_s[0]) == pytest.approx(256 * 2048 * 256 / (1024 * 500e6 * 0.5))
  assert float(cost.cost(compute_bound, fp16, spec, half_pes).latency_s) == pytest.approx(
      2 * float(c.latency_s), rel=0.01
  )
  assert float(cost.cost(compute_bound, fp16, fast_dram, full).latency_s) == pytest.approx(
      float(c.latency_s), rel=0.01
  )

  m = cost.cost(memory_bound, fp16, spec, full)
  assert float(m.op_memory_s[0]) > 10 * float(m.op_compute_s[0])
  assert float(m.latency_s) == pytest.approx(float(m.op_memory_s[0]), rel=0.01)
  # 33.6 MB of fp16 traffic cannot fit the 1 MiB buffer: all of it is DRAM traffic.
  assert float(m.dram_bytes) == pytest.approx((4096 * 2 + 4096 * 4096) * 2, rel=1e-6)
  assert float(cost.cost(memory_bound, fp16, spec, half_pes).latency_s) == pytest.approx(
      float(m.latency_s), rel=0.01
  )
  assert float(cost.cost(memory_bound, fp16, fast_dram, full).latency_s) == pytest.approx(
      float(m.latency_s) / 2, rel=0.01
  )


def test_buffer_pressure_moves_traffic_to_dram():
  spec, ops = hardware.edge_npu(), cost.op_arrays(digits_ops(b=16))
  int8 = cost.one_hot([5] * 4)
  roomy = cost.cost(ops, int8, spec, cost.nominal_state(spec))
  cramped = cost.cost(ops, int8, spec, HardwareState(1.0, 1e3, 1.0))
  assert float(roomy.dram_bytes) < 1.0
  assert float(cramped.dram_bytes) == pytest.approx(
      float(jnp.sum(roomy.op_working_set_bytes)), rel=1e-3
  )
  assert float(cramped.energy_j) > float(roomy.energy_j)
  assert float(cramped.buffer_occupancy) > 1.0 > float(roomy.buffer_occupancy)


def test_vmap_over_assignments_and_states_equals_loop():
  spec, ops = hardware.edge_npu(), digits_ops()
  arrays = cost.op_arrays(ops)
  modes = jax.random.randint(jax.random.key(0), (6, len(ops)), 0, len(MODES))
  state = cost.nominal_state(spec)
  batched = jax.vmap(lambda m: cost.cost(arrays, cost.one_hot(m), spec, state))(modes)
  for k in range(modes.shape[0]):
    single = cost.checked_cost(ops, np.asarray(modes[k]), spec)
    np.testing.assert_allclose(batched.energy_j[k], single.energy_j, rtol=1e-6)
    np.testing.assert_allclose(batched.op_latency_s[k], single.op_latency_s, rtol=1e-6)
  avail = jnp.array([1.0, 0.5, 0.1])
  states = HardwareState(avail, jnp.full(3, 2e4), jnp.ones(3))
  over_states = jax.vmap(lambda s: cost.cost(arrays, cost.one_hot(modes[0]), spec, s))(states)
  for k in range(3):
    single = cost.checked_cost(
        ops, np.asarray(modes[0]), spec, HardwareState(float(avail[k]), 2e4, 1.0)
    )
    np.testing.assert_allclose(over_states.latency_s[k], single.latency_s, rtol=1e-6)


@pytest.mark.parametrize(
    "probs, message",
    [
        (np.full((4, 7), 1 / 7)[:3], r"shape \(3, 7\); expected \(4, 7\)"),
        (np.full((4, 7), 1 / 7) * 1.1, r"op 0 sum to 1.1, expected 1 within 1e-05"),
        (
            np.eye(7)[[0, 1, 2, 3]] * -1
            + 2 * np.eye(7)[[0, 1, 2, 3]]
            + np.eye(7)[[1, 2, 3, 4]]
            - np.eye(7)[[1, 2, 3, 4]] * 2,
            r"probs\[0, 1\] = -1.0; probabilities must be finite",
        ),
        (np.where(np.eye(7)[[0, 1, 2, 3]] > 0, np.nan, 0.0), r"must be finite and >= 0"),
        (np.array([0, 1, 2, 7], np.int32), r"must hold 4 ints in \[0, 7\)"),
    ],
)
def test_bad_probabilities_raise(probs, message):
  with pytest.raises(ValueError, match=message):
    cost.checked_cost(digits_ops(), probs, hardware.edge_npu())


@pytest.mark.parametrize(
    "state, message",
    [
        (HardwareState(1.5, 1e5, 1.0), r"pe_availability = 1.5; expected in \[0, 1\]"),
        (HardwareState(1.0, -1.0, 1.0), r"free_buffer_bytes = -1.0; expected >= 0"),
        (HardwareState(1.0, 1e5, 0.0), r"clock_scale = 0.0; expected in \(0, 1\]"),
        (HardwareState(float("nan"), 1e5, 1.0), r"pe_availability = nan"),
    ],
)
def test_bad_states_raise(state, message):
  with pytest.raises(ValueError, match=message):
    cost.checked_cost(digits_ops(), np.zeros(4, np.int32), hardware.edge_npu(), state)


def test_bad_spec_and_ops_raise():
  with pytest.raises(ValueError, match="static_power_w"):
    cost.checked_cost(
        digits_ops(), np.zeros(4, np.int32), hardware.edge_npu().replace(static_power_w=-1.0)
    )
  with pytest.raises(ValueError, match="op table is empty"):
    cost.op_arrays([])
