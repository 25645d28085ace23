"""Tests for aprec/hardware.py: presets, their cited numbers, and validation messages."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aprec.hardware import specs as hardware
from aprec.emulator.formats import MODES, mode_index

PJ = 1e-12


@pytest.mark.parametrize("name", sorted(hardware.presets()))
def test_presets_validate(name):
  spec = hardware.get_spec(name)
  assert spec.name == name
  assert hardware.validate(spec) is spec
  assert np.asarray(spec.relative_throughput).shape == (len(MODES),)
  assert np.all(np.asarray(spec.peak_macs_per_s) > 0)


def test_get_spec_lists_names():
  with pytest.raises(ValueError, match="datacenter_gpu, edge_npu"):
    hardware.get_spec("tpu_v9")


def test_edge_npu_numbers_follow_sources():
  spec = hardware.edge_npu()
  e = dict(zip(MODES, np.asarray(spec.energy_per_mac_j) / PJ))
  # Horowitz 45 nm: MAC = mult + add at the accumulator width.
  assert e["int8"] == pytest.approx(0.2 + 0.1)
  assert e["fp16"] == pytest.approx(1.1 + 0.9)
  assert e["fp32"] == pytest.approx(3.7 + 0.9)
  assert e["int4"] == pytest.approx(0.2 / 4 + 0.1)  # bits^2 estimate
  rate = dict(zip(MODES, np.asarray(spec.relative_throughput)))
  assert rate["int4"] == 4.0 and rate["int8"] == 1.0  # Bit Fusion
  assert float(spec.sram_energy_per_byte_j) == pytest.approx(12.5 * PJ)
  assert 1300 / 8 * PJ <= float(spec.dram_energy_per_byte_j) <= 2600 / 8 * PJ


def test_datacenter_gpu_matches_anchors():
  spec = hardware.datacenter_gpu()
  tflops = np.asarray(spec.peak_macs_per_s) * 2 / 1e12
  expect = {
      "fp32": 53.3,
      "bf16": 596.9,
      "fp16": 589.9,
      "fp8_e4m3": 1152.5,
      "int8": 1149.0,
      "int4": 1.17,
  }
  for mode, value in expect.items():
    assert tflops[mode_index(mode)] == pytest.approx(value, rel=1e-3), mode
  assert float(spec.dram_bandwidth_bytes_per_s) == pytest.approx(3.63e12, rel=1e-2)


def _bad(**changes):
  return hardware.edge_npu().replace(**changes)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(static_power_w=-1.0), r"NNPSpec.static_power_w = -1.0; expected a finite value >= 0"),
        (dict(clock_hz=float("nan")), r"NNPSpec.clock_hz = nan"),
        (dict(dram_bandwidth_bytes_per_s=0.0), r"dram_bandwidth_bytes_per_s = 0.0; expected > 0"),
        (dict(energy_per_mac_j=np.ones(3)), r"energy_per_mac_j has shape \(3,\); expected \(7,\)"),
        (
            dict(relative_throughput=np.array([1, 1, 1, 1, 1, 1, 0.0])),
            r"relative_throughput\[int4\] = 0.0: every mode needs a positive MAC rate",
        ),
        (
            dict(energy_per_mac_j=np.array([1, 1, -1, 1, 1, 1, 1.0]) * PJ),
            r"energy_per_mac_j\[fp16\]",
        ),
        (dict(roofline_sharpness=0.5), r"roofline_sharpness = 0.5; expected a finite value >= 1"),
    ],
)
def test_validate_rejects_bad_specs(changes, message):
  with pytest.raises(ValueError, match=message):
    hardware.validate(_bad(**changes))


def test_validate_rejects_non_spec():
  with pytest.raises(TypeError, match="expected an NNPSpec"):
    hardware.validate({"num_pes": 1})


def test_spec_is_a_differentiable_pytree():
  spec = hardware.edge_npu()
  leaves = jax.tree_util.tree_leaves(spec)
  assert len(leaves) == 2 + len(hardware.SCALAR_FIELDS)  # static name/sharpness excluded
  grads = jax.grad(lambda s: jnp.sum(s.peak_macs_per_s) / 1e12)(spec)
  assert float(grads.clock_hz) == pytest.approx(
      float(
          np.sum(np.asarray(spec.relative_throughput))
          * spec.num_pes
          * spec.macs_per_pe_cycle
          / 1e12
      )
  )
  # A spec passes through jit with its static fields intact.
  out = jax.jit(lambda s: s)(spec)
  assert out.name == "edge_npu" and out.roofline_sharpness == spec.roofline_sharpness
