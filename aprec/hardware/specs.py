"""The NNP's hardware description: throughput, energy and memory numbers per precision mode.

An ``NNPSpec`` is a frozen pytree: its numeric fields are leaves, so the cost model is
differentiable in every one of them and ``aprec.hardware.fit`` can fit a spec with optax.
Per-mode fields are arrays indexed like ``aprec.emulator.formats.MODES``.

Two presets ship, each number with its source beside it: ``edge_npu()`` (a bit-flexible
edge accelerator priced with Horowitz's 45 nm energies) and ``datacenter_gpu()`` (an H200
as measured through JAX, ``aprec/data_files/h200_anchors.json``). Numbers that no source
gives are labelled ASSUMPTION or ESTIMATE.

Example:
  >>> from aprec import hardware
  >>> spec = hardware.get_spec("edge_npu")
  >>> round(float(spec.peak_macs_per_s[5]) / 1e9)  # INT8 MAC/s in GMAC/s
  512
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import flax.struct
import numpy as np

from aprec.emulator.formats import MODE_TABLE, MODES, N_MODES

PJ = 1e-12

PER_MODE_FIELDS = ("relative_throughput", "energy_per_mac_j")
SCALAR_FIELDS = (
    "num_pes",
    "clock_hz",
    "macs_per_pe_cycle",
    "buffer_bytes",
    "sram_bandwidth_bytes_per_s",
    "sram_energy_per_byte_j",
    "dram_bandwidth_bytes_per_s",
    "dram_energy_per_byte_j",
    "dma_conversion_energy_per_byte_j",
    "static_power_w",
    "tdp_w",
    "op_overhead_s",
)


@flax.struct.dataclass(kw_only=True)
class NNPSpec:
  """One neural network processor.

  The INT8 MAC rate is ``num_pes * clock_hz * macs_per_pe_cycle``; a mode's rate is that
  times ``relative_throughput[mode]``.

  Attributes:
    name: preset name (static, not a leaf).
    num_pes: processing elements.
    clock_hz: PE clock.
    macs_per_pe_cycle: INT8 multiply-accumulates per PE per cycle.
    relative_throughput: [n_modes] MAC rate relative to INT8 (INT8 = 1).
    energy_per_mac_j: [n_modes] energy of one MAC (multiply + accumulate) in each mode.
    buffer_bytes: on-chip buffer (SRAM) capacity.
    sram_bandwidth_bytes_per_s, sram_energy_per_byte_j: on-chip buffer traffic.
    dram_bandwidth_bytes_per_s, dram_energy_per_byte_j: off-chip traffic.
    dma_conversion_energy_per_byte_j: the DMA's format conversion (scale, round, pack)
      between the accumulator format and a narrower storage format, per converted byte.
    static_power_w: leakage and always-on power, drawn whenever the chip runs.
    tdp_w: the sustained power budget (the simulator's default power cap).
    op_overhead_s: fixed time per op (launch, DMA descriptor setup, dispatch).
    roofline_sharpness: exponent ``q`` of the smooth roofline ``(c^q + m^q)^(1/q)`` that
      joins compute time ``c`` and memory time ``m`` (static). Larger is closer to
      ``max``; at ``c == m`` the latency is ``2^(1/q)`` times either.
    buffer_softness: width of the smooth "working set fits in the free buffer" gate, as a
      fraction of the working set (static).
  """

  name: str = flax.struct.field(pytree_node=False, default="custom")
  num_pes: float
  clock_hz: float
  macs_per_pe_cycle: float
  relative_throughput: np.ndarray
  energy_per_mac_j: np.ndarray
  buffer_bytes: float
  sram_bandwidth_bytes_per_s: float
  sram_energy_per_byte_j: float
  dram_bandwidth_bytes_per_s: float
  dram_energy_per_byte_j: float
  dma_conversion_energy_per_byte_j: float
  static_power_w: float
  tdp_w: float
  op_overhead_s: float = 0.0
  roofline_sharpness: float = flax.struct.field(pytree_node=False, default=4.0)
  buffer_softness: float = flax.struct.field(pytree_node=False, default=0.05)

  def _key(self) -> tuple:
    fields = [
        getattr(self, f) for f in ("name", *SCALAR_FIELDS, "roofline_sharpness", "buffer_softness")
    ]
    arrays = [np.asarray(getattr(self, f), np.float64).tobytes() for f in PER_MODE_FIELDS]
    return (*(float(v) if not isinstance(v, str) else v for v in fields), *arrays)

  def __eq__(self, other: object) -> bool:
    """Equal when every field is (per-mode arrays compared element-wise); outside ``jit``."""
    return isinstance(other, NNPSpec) and self._key() == other._key()

  def __hash__(self) -> int:
    """Hashable by value (outside ``jit``), so a spec can key a cache or a ``Budget``."""
    return hash(self._key())

  @property
  def peak_macs_per_s(self):
    """[n_modes] peak MAC rate of each mode with every PE at full clock."""
    return self.num_pes * self.clock_hz * self.macs_per_pe_cycle * self.relative_throughput


def _per_mode(values: dict[str, float]) -> np.ndarray:
  """A float64 per-mode array from ``{mode name: value}`` covering every mode."""
  missing = [m for m in MODES if m not in values]
  if missing:
    raise ValueError(f"per-mode values miss modes {missing}; give one for each of {MODES}")
  return np.array([values[m] for m in MODES], np.float64)


def validate(spec: NNPSpec) -> NNPSpec:
  """Checks a spec's numbers (outside ``jit``); returns it unchanged or raises ``ValueError``.

  Rejects NaN, infinite or negative values, per-mode arrays of the wrong length, modes
  without throughput, and a non-positive clock, PE count, bandwidth or roofline sharpness.

  Example:
    >>> validate(edge_npu()).name
    'edge_npu'
  """
  if not isinstance(spec, NNPSpec):
    raise TypeError(
        f"expected an NNPSpec, got {type(spec).__name__}; build one with "
        f"aprec.hardware.specs.get_spec(name) or NNPSpec(...)"
    )
  for field in PER_MODE_FIELDS:
    value = np.asarray(getattr(spec, field), np.float64)
    if value.shape != (N_MODES,):
      raise ValueError(
          f"NNPSpec.{field} has shape {value.shape}; expected ({N_MODES},), "
          f"one value per mode in the order {MODES}"
      )
    for i, v in enumerate(value):
      if not math.isfinite(v) or v < 0:
        raise ValueError(f"NNPSpec.{field}[{MODES[i]}] = {v}; expected a finite value >= 0")
  rates = np.asarray(spec.relative_throughput, np.float64)
  for i, v in enumerate(rates):
    if v <= 0:
      raise ValueError(
          f"NNPSpec.relative_throughput[{MODES[i]}] = {v}: every mode needs a positive MAC "
          f"rate relative to INT8 (e.g. 4.0 for a Bit Fusion INT4 PE, 0.5 for FP16); give a "
          f"tiny positive rate for a mode the hardware only emulates"
      )
  for field in SCALAR_FIELDS:
    value = np.asarray(getattr(spec, field), np.float64)
    if value.shape != ():
      raise ValueError(f"NNPSpec.{field} has shape {value.shape}; expected a scalar")
    v = float(value)
    if not math.isfinite(v) or v < 0:
      raise ValueError(f"NNPSpec.{field} = {v}; expected a finite value >= 0")
  for field in (
      "num_pes",
      "clock_hz",
      "macs_per_pe_cycle",
      "sram_bandwidth_bytes_per_s",
      "dram_bandwidth_bytes_per_s",
      "tdp_w",
  ):
    if float(getattr(spec, field)) <= 0:
      raise ValueError(f"NNPSpec.{field} = {float(getattr(spec, field))}; expected > 0")
  if not (math.isfinite(spec.roofline_sharpness) and spec.roofline_sharpness >= 1):
    raise ValueError(
        f"NNPSpec.roofline_sharpness = {spec.roofline_sharpness}; expected a "
        f"finite value >= 1 (1 adds compute and memory time, large -> max)"
    )
  if not (math.isfinite(spec.buffer_softness) and spec.buffer_softness > 0):
    raise ValueError(
        f"NNPSpec.buffer_softness = {spec.buffer_softness}; expected > 0 "
        f"(e.g. 0.05: the fit gate is 5% of the working set wide)"
    )
  return spec


def _mac_energy_45nm_pj() -> dict[str, float]:
  """Energy of one MAC per mode at 45 nm, in pJ: multiplier + adder at accumulator width.

  Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm: INT8 add/mult 0.03/0.2 pJ,
  INT32 add/mult 0.1/3.1 pJ, FP16 add/mult 0.4/1.1 pJ, FP32 add/mult 0.9/3.7 pJ.
  Integer modes accumulate in INT32 (0.1 pJ add); float modes in FP32 (0.9 pJ add).
  """
  int32_add, fp32_add = 0.1, 0.9
  fp16_mult, int8_mult = 1.1, 0.2

  def scaled_mult(ref_pj: float, ref_bits: int, bits: int) -> float:
    # ESTIMATE: an array multiplier's energy grows with the square of its operand width
    # (for floats: the significand width, hidden bit included).
    return ref_pj * (bits / ref_bits) ** 2

  def significand(name: str) -> int:
    return next(m for m in MODE_TABLE if m.name == name).mantissa_bits + 1

  fp16_sig = significand("fp16")  # 11
  return {
      "fp32": 3.7 + fp32_add,  # Horowitz FP32 mult + FP32 add = 4.6 pJ.
      "fp16": fp16_mult + fp32_add,  # Horowitz FP16 mult + FP32 accumulate = 2.0 pJ.
      # ESTIMATES (not in Horowitz): significand 8 / 4 / 3 bits vs FP16's 11.
      "bf16": scaled_mult(fp16_mult, fp16_sig, significand("bf16")) + fp32_add,
      "fp8_e4m3": scaled_mult(fp16_mult, fp16_sig, significand("fp8_e4m3")) + fp32_add,
      "fp8_e5m2": scaled_mult(fp16_mult, fp16_sig, significand("fp8_e5m2")) + fp32_add,
      "int8": int8_mult + int32_add,  # Horowitz INT8 mult + INT32 add = 0.3 pJ.
      "int4": scaled_mult(int8_mult, 8, 4) + int32_add,  # ESTIMATE: 0.05 + 0.1 pJ.
  }


def edge_npu() -> NNPSpec:
  """A bit-flexible edge NPU (45 nm energies, Bit Fusion throughput ratios).

  Example:
    >>> spec = edge_npu()
    >>> [round(float(e) * 1e12, 3) for e in spec.energy_per_mac_j[[0, 5, 6]]]
    [4.6, 0.3, 0.15]
  """
  mac_pj = _mac_energy_45nm_pj()
  spec = NNPSpec(
      name="edge_npu",
      num_pes=1024.0,  # ASSUMPTION: a 32x32 PE array.
      clock_hz=500e6,  # ASSUMPTION: 500 MHz, typical of edge NPUs.
      macs_per_pe_cycle=1.0,  # one INT8 MAC per PE per cycle (Bit Fusion: 16 2-bit bricks).
      relative_throughput=_per_mode(
          {
              # Bit Fusion (Sharma et al., ISCA 2018): 2-bit bricks fuse into 2/4/8/16-bit PEs;
              # INT4 runs 4x and INT8 1x.
              "int4": 4.0,
              "int8": 1.0,
              # ASSUMPTIONS for the float modes (no Bit Fusion float path): FP8 on the 8-bit
              # datapath at the INT8 rate; BF16/FP16 fuse 4x the bricks of INT8 for the
              # multiplier but share the FP32 adder, taken as 1/2; FP32 1/8.
              "fp8_e4m3": 1.0,
              "fp8_e5m2": 1.0,
              "bf16": 0.5,
              "fp16": 0.5,
              "fp32": 0.125,
          }
      ),
      energy_per_mac_j=_per_mode({k: v * PJ for k, v in mac_pj.items()}),
      buffer_bytes=float(1 << 20),  # ASSUMPTION: 1 MiB global buffer (Horowitz's 1 MB point).
      # ASSUMPTION: 128 B/cycle from the buffer at 500 MHz.
      sram_bandwidth_bytes_per_s=128 * 500e6,
      # Horowitz: 64-bit read from a 1 MB SRAM = 100 pJ -> 12.5 pJ/B (8 KB: 10 pJ, 32 KB: 20 pJ).
      sram_energy_per_byte_j=100.0 / 8 * PJ,
      dram_bandwidth_bytes_per_s=16e9,  # ASSUMPTION: LPDDR4x-class, 16 GB/s.
      # Horowitz: DRAM 64-bit access 1.3-2.6 nJ; the midpoint 1.95 nJ / 8 B = 243.75 pJ/B.
      dram_energy_per_byte_j=1950.0 / 8 * PJ,
      # ESTIMATE: one FP16 multiply (Horowitz 1.1 pJ) per 2-byte element to apply a scale.
      dma_conversion_energy_per_byte_j=0.55 * PJ,
      static_power_w=0.05,  # ASSUMPTION: 50 mW leakage + always-on logic.
      tdp_w=2.0,  # ASSUMPTION: a 2 W edge power envelope.
      op_overhead_s=0.0,  # ASSUMPTION: layer setup hidden behind the previous layer.
      roofline_sharpness=4.0,
  )
  return validate(spec)


# H200 through JAX (aprec/data_files/h200_anchors.json, copied from
# shared/anchors/h200-jax-2026-11-28.json), square 16384^3 products, TFLOP/s (2 FLOP/MAC).
_H200_TFLOPS = {
    # The fp32 mode is true FP32 (precision HIGHEST, 53 TFLOP/s), because the emulator's
    # fp32 mode is IEEE FP32; JAX's default fp32 dot on this GPU uses TF32 (350 TFLOP/s).
    "fp32": 53.297,
    "bf16": 596.914,
    "fp16": 589.871,
    "fp8_e4m3": 1152.519,
    # ASSUMPTION: not measured; Hopper runs both FP8 formats on the same tensor cores.
    "fp8_e5m2": 1152.519,
    "int8": 1148.977,
    "int4": 1.169,  # XLA has no fast INT4 path on this GPU: ~1000x below INT8.
}


def datacenter_gpu() -> NNPSpec:
  """An NVIDIA H200 as JAX drives it (measured throughputs, stated energy assumptions).

  Example:
    >>> spec = datacenter_gpu()
    >>> round(float(spec.peak_macs_per_s[1]) * 2 / 1e12)  # bf16 TFLOP/s
    597
  """
  num_sms, clock_hz = 132.0, 1.98e9  # H200 SXM: 132 SMs, 1.98 GHz boost (NVIDIA spec sheet).
  int8_macs_per_s = _H200_TFLOPS["int8"] * 1e12 / 2
  peak_macs = {k: v * 1e12 / 2 for k, v in _H200_TFLOPS.items()}
  tdp_w, static_w = 700.0, 100.0  # H200 SXM TDP 700 W; ASSUMPTION: ~100 W idle/static.
  # ASSUMPTION: a large matmul on the tensor cores draws the full TDP, so its energy per
  # MAC is the dynamic power (TDP - static) over the measured MAC rate. Modes off the
  # tensor cores (FP32 on CUDA cores, INT4 emulated) are taken to draw half that.
  dynamic_w = {m: (tdp_w - static_w) * (0.5 if m in ("fp32", "int4") else 1.0) for m in MODES}
  spec = NNPSpec(
      name="datacenter_gpu",
      num_pes=num_sms,
      clock_hz=clock_hz,
      macs_per_pe_cycle=int8_macs_per_s / (num_sms * clock_hz),  # ~2198 INT8 MAC/SM/cycle.
      relative_throughput=_per_mode({k: v / peak_macs["int8"] for k, v in peak_macs.items()}),
      energy_per_mac_j=_per_mode({m: dynamic_w[m] / peak_macs[m] for m in MODES}),
      buffer_bytes=50e6,  # the GH100 die's 50 MB L2 cache stands in for the buffer.
      sram_bandwidth_bytes_per_s=7e12,  # ESTIMATE: L2 bandwidth ~7 TB/s (microbenchmarks).
      sram_energy_per_byte_j=5.0 * PJ,  # ESTIMATE: order of magnitude for a large L2 at 4 nm.
      dram_bandwidth_bytes_per_s=3.635e12,  # measured: 4 GiB copy, 3.6 TB/s read + write.
      # ESTIMATE: HBM ~3.9 pJ/bit (O'Connor et al., MICRO 2017) -> 31 pJ/B.
      dram_energy_per_byte_j=31.0 * PJ,
      dma_conversion_energy_per_byte_j=0.5 * PJ,  # ESTIMATE: one multiply per element.
      static_power_w=static_w,
      tdp_w=tdp_w,
      # measured: a 16x4096x4096 bf16 dot (32 MB, ~10 us of traffic) took 84 us per jitted
      # call, so dispatch dominates small calls.
      op_overhead_s=70e-6,
      roofline_sharpness=2.0,
  )
  return validate(spec)


_PRESETS: dict[str, Callable[[], NNPSpec]] = {
    "edge_npu": edge_npu,
    "datacenter_gpu": datacenter_gpu,
}


def presets() -> dict[str, Callable[[], NNPSpec]]:
  """The preset registry, name -> constructor.

  Example:
    >>> sorted(presets())
    ['datacenter_gpu', 'edge_npu']
  """
  return dict(_PRESETS)


def get_spec(ref: str | os.PathLike[str] | NNPSpec) -> NNPSpec:
  """A spec from a preset name, a JSON file written by ``save_spec``, or an ``NNPSpec``.

  Raises ``ValueError`` naming the known presets, or the file and the field at fault.

  Example:
    >>> get_spec("datacenter_gpu").name
    'datacenter_gpu'
    >>> get_spec(edge_npu()) == get_spec("edge_npu")
    True
  """
  if isinstance(ref, NNPSpec):
    return validate(ref)
  if isinstance(ref, os.PathLike) or (isinstance(ref, str) and ref.endswith(".json")):
    from aprec.hardware.spec_io import load_spec

    return load_spec(ref)
  if not isinstance(ref, str):
    raise TypeError(
        f"expected an NNPSpec, a preset name or a JSON file, got " f"{type(ref).__name__}"
    )
  try:
    return _PRESETS[ref]()
  except KeyError:
    raise ValueError(
        f"unknown NNP spec {ref!r}; known presets: "
        f"{', '.join(sorted(_PRESETS))}, or a JSON file (e.g. my_npu.json; "
        "`aprec spec edge_npu --out my_npu.json` writes a starting point)"
    ) from None
