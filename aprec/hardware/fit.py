"""Fitting an ``NNPSpec`` to measured op latencies with optax.

``fit_spec`` moves a spec's throughput, bandwidth and overhead parameters (in log space, so
they stay positive) to minimise the mean squared log error between the cost model's
latency and measured latencies. ``load_anchor_measurements`` turns the H200 anchors
(square matmuls per format, M x K x N dots, a large copy) into ``Measurement`` records.

Example:
  >>> from aprec import hardware
  >>> from aprec.hardware import fit
  >>> rows = fit.load_anchor_measurements(fit.PACKAGED_ANCHORS_PATH)
  >>> fitted, history = fit.fit_spec(hardware.datacenter_gpu(), rows, steps=50)
  >>> bool(history[-1] < history[0])
  True
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aprec.hardware.cost import HardwareState, OpArrays, cost, nominal_state, one_hot, op_arrays
from aprec.emulator.formats import MODES, mode_index
from aprec.hardware.specs import NNPSpec, validate
from aprec.emulator.ops import Op

PACKAGED_ANCHORS_PATH = pathlib.Path(__file__).resolve().parent / "data_files" / "h200_anchors.json"

# Fitted by default: the MAC rate of every mode, both bandwidths and the per-op overhead.
# Energies are not identifiable from latencies and stay as they are.
DEFAULT_FIT_FIELDS = (
    "relative_throughput",
    "dram_bandwidth_bytes_per_s",
    "sram_bandwidth_bytes_per_s",
    "op_overhead_s",
)

# Anchor format -> mode. "fp32_highest" is true FP32, the emulator's fp32 mode;
# "fp32_default" (TF32 on this GPU) is no aprec mode and is left out.
ANCHOR_FORMATS = {
    "fp32_highest": "fp32",
    "bf16": "bf16",
    "fp16": "fp16",
    "fp8_e4m3": "fp8_e4m3",
    "int8": "int8",
    "int4": "int4",
}
# XLA's FP8 dots with this few rows (or fewer) hit a slow kernel on the H200 anchors.
SLOW_FP8_MAX_M = 2048


@dataclasses.dataclass(frozen=True, kw_only=True)
class Measurement:
  """One measured op: its record, the mode it ran in, and the measured latency.

  Attributes:
    op: the op (shapes, MACs).
    mode: index into ``aprec.emulator.formats.MODES``.
    latency_s: measured seconds per call.
    label: where the row came from, e.g. ``"matmul n=4096 bf16"``.
  """

  op: Op
  mode: int
  latency_s: float
  label: str


def dot_op(m: int, k: int, n: int, name: str = "dot") -> Op:
  """The ``Op`` of an ``[m, k] @ [k, n]`` product with the right operand as the weight.

  Example:
    >>> dot_op(2, 3, 4).macs
    24
  """
  return Op(
      name=name,
      kind="dot_general",
      lhs_shape=(m, k),
      rhs_shape=(k, n),
      out_shape=(m, n),
      weight_operand=1,
      macs=m * k * n,
      contraction_size=k,
  )


def copy_op(elements: int) -> Op:
  """An elementwise pass over ``elements`` values (one multiply each, no weight)."""
  return Op(
      name="copy",
      kind="dot_general",
      lhs_shape=(elements,),
      rhs_shape=(1,),
      out_shape=(elements,),
      weight_operand=None,
      macs=elements,
      contraction_size=1,
  )


def load_anchor_measurements(
    path: str | pathlib.Path | None = None,
    *,
    include_slow_paths: bool = False,
    include_dots: bool = True,
    include_copy: bool = True,
) -> list[Measurement]:
  """Reads the H200 anchors into ``Measurement`` rows.

  Args:
    path: an anchors JSON in the format of ``shared/anchors/h200-jax-2026-11-28.json``.
      Default: the packaged copy ``PACKAGED_ANCHORS_PATH``.
    include_slow_paths: keep the rows where XLA has no fast kernel, which no roofline
      describes: INT4 matmuls (~1000x below INT8; only the INT4 rate would learn from
      them) and FP8 dots with M <= 2048 (a ~0.7 ms floor whatever M, down to 0.17x bf16).
    include_dots: keep the M x K x N dots (bf16 / int8 / fp8 on pre-quantized operands).
    include_copy: keep the 4 GiB copy (read + write), treated as an fp32 elementwise op.

  Example:
    >>> rows = load_anchor_measurements(PACKAGED_ANCHORS_PATH)
    >>> rows[0].label
    'matmul n=4096 fp32'
  """
  if path is None:
    path = PACKAGED_ANCHORS_PATH
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(
        f"no anchors file at {path}; pass path="
        f"aprec.hardware.fit.PACKAGED_ANCHORS_PATH for the packaged copy"
    )
  data = json.loads(path.read_text())
  if "matmul" not in data:
    raise ValueError(f"{path} has no 'matmul' rows; expected the H200 anchors format")
  rows: list[Measurement] = []
  for r in data["matmul"]:
    mode = ANCHOR_FORMATS.get(r["format"])
    if mode is None or (mode == "int4" and not include_slow_paths):
      continue
    n = int(r["n"])
    rows.append(
        Measurement(
            op=dot_op(n, n, n, f"matmul_{n}"),
            mode=mode_index(mode),
            latency_s=float(r["ms"]) * 1e-3,
            label=f"matmul n={n} {mode}",
        )
    )
  if include_dots:
    for m, k, n, fmt, ms in _dot_rows(data):
      if fmt.startswith("fp8") and m <= SLOW_FP8_MAX_M and not include_slow_paths:
        continue
      rows.append(
          Measurement(
              op=dot_op(m, k, n, f"dot_{m}x{k}x{n}"),
              mode=mode_index(fmt),
              latency_s=ms * 1e-3,
              label=f"dot {m}x{k}x{n} {fmt}",
          )
      )
  if include_copy and "copy" in data:
    elements = int(data["copy"]["bytes"]) // 8  # fp32: 4 bytes read + 4 written each
    rows.append(
        Measurement(
            op=copy_op(elements),
            mode=mode_index("fp32"),
            latency_s=float(data["copy"]["ms"]) * 1e-3,
            label=f"copy {data['copy']['bytes'] / 2**30:.0f} GiB",
        )
    )
  return rows


def _dot_rows(data: dict) -> list[tuple[int, int, int, str, float]]:
  """(m, k, n, mode, ms) from either the packaged ``dot`` rows or the raw ``fakequant``."""
  if "dot" in data:
    return [(*map(int, r["mkn"]), r["format"], float(r["ms"])) for r in data["dot"]]
  return [(*map(int, r["mkn"]), "bf16", float(r["bf16_ms"])) for r in data.get("fakequant", [])]


def measurement_arrays(
    measurements: Sequence[Measurement], dtype=None
) -> tuple[OpArrays, jax.Array, jax.Array]:
  """``(ops, one-hot modes [n, n_modes], measured latency_s [n])`` for the fit."""
  if not measurements:
    raise ValueError("no measurements to fit; load some with load_anchor_measurements()")
  ops = op_arrays([m.op for m in measurements], dtype)
  probs = one_hot([m.mode for m in measurements], ops.macs.dtype)
  latency = jnp.asarray([m.latency_s for m in measurements], ops.macs.dtype)
  if not bool(jnp.all(latency > 0)):
    raise ValueError("every measured latency_s must be > 0")
  return ops, probs, latency


def predict_latency_s(
    spec: NNPSpec, ops: OpArrays, probs: jax.Array, state: HardwareState
) -> jax.Array:
  """Per-op latency the cost model predicts, each op timed alone (a pure function)."""
  return cost(ops, probs, spec, state).op_latency_s


def _get(spec: NNPSpec, fields: Sequence[str]) -> dict[str, jax.Array]:
  return {f: jnp.log(jnp.asarray(getattr(spec, f))) for f in fields}


def _set(spec: NNPSpec, log_params: dict[str, jax.Array]) -> NNPSpec:
  return spec.replace(**{f: jnp.exp(v) for f, v in log_params.items()})


def fit_spec(
    spec: NNPSpec,
    measurements: Sequence[Measurement],
    *,
    steps: int = 2000,
    learning_rate: float = 0.05,
    fields: Sequence[str] = DEFAULT_FIT_FIELDS,
    state: HardwareState | None = None,
) -> tuple[NNPSpec, np.ndarray]:
  """Fits ``fields`` of ``spec`` to measured latencies by Adam on the log parameters.

  The loss is the mean squared log error ``mean((log predicted - log measured)^2)``.
  Every measured op is priced alone on an otherwise idle chip (``state``, default
  ``nominal_state(spec)``). Parameters must start positive (a zero overhead starts at 1 ns).
  A mode without measured rows keeps its starting rate (its gradient is zero); on the H200
  anchors that is ``fp8_e5m2``, which Hopper runs at the ``fp8_e4m3`` rate.

  Args:
    spec: the starting spec (e.g. ``hardware.datacenter_gpu()``).
    measurements: the rows to fit.
    steps, learning_rate: Adam schedule (the loop runs in one ``lax.scan``).
    fields: numeric spec fields to fit.
    state: the hardware state the rows were measured in.

  Returns:
    ``(fitted_spec, history)``, ``history[i]`` the loss before step ``i`` (NumPy).

  Example:
    >>> from aprec.hardware.specs import datacenter_gpu
    >>> rows = load_anchor_measurements(PACKAGED_ANCHORS_PATH)
    >>> fitted, history = fit_spec(datacenter_gpu(), rows, steps=20)
    >>> history.shape
    (20,)
  """
  validate(spec)
  unknown = [f for f in fields if not hasattr(spec, f)]
  if unknown:
    raise ValueError(
        f"unknown NNPSpec fields {unknown}; fit any of {DEFAULT_FIT_FIELDS} "
        f"or another numeric field"
    )
  if steps < 1 or not math.isfinite(learning_rate) or learning_rate <= 0:
    raise ValueError(f"need steps >= 1 and learning_rate > 0, got {steps}, {learning_rate}")
  ops, probs, measured = measurement_arrays(measurements)
  state = nominal_state(spec) if state is None else state
  start = spec.replace(
      **{f: np.maximum(np.asarray(getattr(spec, f), np.float64), 1e-9) for f in fields}
  )
  params = _get(start, fields)
  optimizer = optax.adam(learning_rate)

  def loss_fn(log_params):
    predicted = predict_latency_s(_set(start, log_params), ops, probs, state)
    return jnp.mean((jnp.log(predicted) - jnp.log(measured)) ** 2)

  @jax.jit
  def run(params):
    def body(carry, _):
      params, opt_state = carry
      loss, grads = jax.value_and_grad(loss_fn)(params)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss

    (params, _), history = jax.lax.scan(body, (params, optimizer.init(params)), None, length=steps)
    return params, history

  params, history = run(params)
  fitted = _set(start, params)
  fitted = fitted.replace(**{f: np.asarray(getattr(fitted, f), np.float64) for f in fields})
  return validate(fitted), np.asarray(history)


def percentage_errors(
    spec: NNPSpec, measurements: Sequence[Measurement], state: HardwareState | None = None
) -> np.ndarray:
  """``100 * |predicted - measured| / measured`` per row.

  Example:
    >>> from aprec.hardware.specs import datacenter_gpu
    >>> rows = load_anchor_measurements(PACKAGED_ANCHORS_PATH)
    >>> percentage_errors(datacenter_gpu(), rows).shape == (len(rows),)
    True
  """
  ops, probs, measured = measurement_arrays(measurements)
  state = nominal_state(spec) if state is None else state
  predicted = predict_latency_s(spec, ops, probs, state)
  return np.asarray(100.0 * jnp.abs(predicted - measured) / measured)


def mape(
    spec: NNPSpec, measurements: Sequence[Measurement], state: HardwareState | None = None
) -> float:
  """Mean absolute percentage error of the predicted latencies."""
  return float(np.mean(percentage_errors(spec, measurements, state)))


def split_holdout(
    measurements: Sequence[Measurement], every: int = 3
) -> tuple[list[Measurement], list[Measurement]]:
  """``(train, held_out)``: every ``every``-th row (from index 1) is held out.

  Example:
    >>> train, held = split_holdout(list(range(6)), every=3)
    >>> held
    [1, 4]
  """
  if every < 2:
    raise ValueError(f"every = {every}; hold out every k-th row with k >= 2")
  held = [m for i, m in enumerate(measurements) if i % every == 1]
  train = [m for i, m in enumerate(measurements) if i % every != 1]
  return train, held


def split_by_size(
    measurements: Sequence[Measurement], n: int = 8192
) -> tuple[list[Measurement], list[Measurement]]:
  """``(train, held_out)``: the ``n x n x n`` products (every format) are held out.

  Example:
    >>> rows = load_anchor_measurements(PACKAGED_ANCHORS_PATH)
    >>> train, held = split_by_size(rows, 8192)
    >>> sorted({m.op.macs for m in held}) == [8192 ** 3]
    True
  """

  def cube(m: Measurement) -> bool:
    return (
        len(m.op.lhs_shape) == 2
        and len(m.op.rhs_shape) == 2
        and m.op.lhs_shape == (n, n)
        and m.op.rhs_shape == (n, n)
    )

  held = [m for m in measurements if cube(m)]
  if not held:
    raise ValueError(
        f"no {n}x{n}x{n} rows to hold out; sizes present: "
        f"{sorted({m.op.lhs_shape for m in measurements})}"
    )
  return [m for m in measurements if not cube(m)], held


def error_table(
    spec: NNPSpec, measurements: Sequence[Measurement], held_out: Sequence[Measurement] = ()
) -> list[dict]:
  """One dict per row: label, mode, measured and predicted ms, error %, held-out flag."""
  rows = list(measurements) + list(held_out)
  ops, probs, measured = measurement_arrays(rows)
  predicted = np.asarray(predict_latency_s(spec, ops, probs, nominal_state(spec)))
  n_train = len(measurements)
  return [
      {
          "label": m.label,
          "mode": MODES[m.mode],
          "measured_ms": m.latency_s * 1e3,
          "predicted_ms": float(predicted[i]) * 1e3,
          "error_pct": 100.0 * abs(float(predicted[i]) - m.latency_s) / m.latency_s,
          "held_out": i >= n_train,
      }
      for i, m in enumerate(rows)
  ]
