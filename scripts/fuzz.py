"""Fuzz the quantizer and the PAK against NumPy/ml_dtypes references (not part of make test).

Generates >= 100,000 cases — small tensors of extremes, subnormals, zeros, NaN/Inf, random
bit patterns, near-ties and ordinary values — for every mode (and two invalid indices),
every activation scaling, dynamic and static (calibrated) ranges, with the mode passed
traced, as a compile-time constant, and (quantizer) as a Python int. Each case is compared
with an independent NumPy reference that models what the documented numerics say:

- float32 arithmetic, with subnormals flushed to zero where XLA:CPU flushes them (inputs
  and results of the scaled modes' arithmetic);
- bf16/fp16 are the ml_dtypes casts, so a finite value beyond the format's range becomes
  inf: counted as a *documented overflow* (as is float32 accumulation overflow);
- an invalid mode index gives NaN.

Prints and writes ``runs/bench/fuzz.json`` with ``"ratios"``: ``fuzz_cases``,
``fuzz_mismatches`` (a value differs from the reference: bitwise for quantized values,
integer products and scales; within the float32 summation-order bound for float
products), ``fuzz_unexpected_nan`` (NaN or inf the reference does not have),
``fuzz_documented_overflow`` and ``fuzz_crashes`` (cases in a call that raised).

Usage: ``python scripts/fuzz.py [--cases-per-call 400] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

_REPO = pathlib.Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
  sys.path.insert(0, str(_REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from aprec.emulator import formats  # noqa: E402
from aprec.emulator import pak  # noqa: E402
from aprec.emulator.formats import MODE_TABLE, N_MODES  # noqa: E402

F32 = np.float32
TINY = np.finfo(F32).tiny
EPS = np.finfo(F32).eps / 2  # unit roundoff 2**-24
INVALID = (-1, N_MODES)
EXTREMES = np.array(
    [
        0.0,
        -0.0,
        np.inf,
        -np.inf,
        np.nan,
        3.4028235e38,
        -3.4028235e38,
        1e-45,
        -1e-45,
        1.1754944e-38,
        9.18355e-41,
        6e-8,
        3e-8,
        5.9604645e-08,
        2.9802322e-08,
        6.1035156e-05,
        65504.0,
        65520.0,
        65519.99,
        -65536.0,
        448.0,
        464.0,
        480.0,
        57344.0,
        61440.0,
        240.0,
        0.001953125,
        0.0009765625,
        1.52587890625e-05,
        7.62939453125e-06,
        1.0,
        -1.0,
        0.5,
        1.0 + 2**-8,
        1.0 + 3 * 2**-8,
        127.0,
        127.5,
        -126.5,
        7.5,
        3.3895314e38,
        1e38,
    ],
    F32,
)
Q_SHAPE = (4, 6)  # one quantizer case
M, K, N = 3, 8, 4  # one PAK case: (M, K) @ (K, N)
REDUCE = {"per_tensor": (0, 1), "per_row": (1,), "per_column": (0,)}
# Activation scaling → the lhs axes that share one scale (weights: per output channel).
LHS_AXES = {"per_tensor": (0, 1), "per_token": (1,)}


# --------------------------------------------------------------------------------------
# Case generation.


def generate(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
  """``n`` float32 tensors of ``shape``, each drawn from one of several families."""
  size = int(np.prod(shape))
  out = np.empty((n, size), F32)
  kinds = rng.integers(0, 7, n)
  for i, kind in enumerate(kinds):
    if kind == 0:  # ordinary values at a random magnitude, normal to subnormal to huge
      out[i] = rng.standard_normal(size) * F32(10.0) ** rng.uniform(-44, 38)
    elif kind == 1:  # extremes only
      out[i] = rng.choice(EXTREMES, size)
    elif kind == 2:  # ordinary values with a few extremes mixed in
      out[i] = rng.standard_normal(size) * F32(10.0) ** rng.uniform(-3, 3)
      hit = rng.random(size) < 0.2
      out[i, hit] = rng.choice(EXTREMES, int(hit.sum()))
    elif kind == 3:  # zeros of both signs
      out[i] = rng.choice(np.array([0.0, -0.0], F32), size)
    elif kind == 4:  # any bit pattern: NaN payloads, infinities, subnormals
      out[i] = rng.integers(0, 2**32, size, dtype=np.uint64).astype(np.uint32).view(F32)
    elif kind == 5:  # near rounding ties of the integer grids
      e = F32(2.0) ** rng.integers(-20, 20)
      out[i] = rng.integers(-254, 255, size).astype(F32) / F32(2) * e
      out[i, 0] = F32(127) * e
    else:  # subnormals and values next to the smallest normal
      out[i] = rng.choice(
          np.array([1e-45, 1e-40, 1.1754942e-38, 1.1754944e-38, 2.4e-38, 1.0, 1e-3], F32), size
      ) * rng.choice([-1, 1], size)
  with np.errstate(all="ignore"):
    return out.astype(F32).reshape((n,) + shape)


def generate_amax(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
  """Calibrated ranges: ordinary positive values, plus zeros, subnormals and infinities."""
  amax = np.abs(rng.standard_normal((n,) + shape)).astype(F32) * F32(10.0) ** rng.uniform(
      -3, 3, (n,) + (1,) * len(shape)
  ).astype(F32)
  odd = rng.random((n,) + shape) < 0.1
  amax[odd] = rng.choice(np.array([0.0, 1e-40, TINY, np.inf, 3.4e38], F32), int(odd.sum()))
  return amax


# --------------------------------------------------------------------------------------
# References (NumPy / ml_dtypes, float32 arithmetic as XLA:CPU does it).


def ftz(v: np.ndarray) -> np.ndarray:
  """Flush float32 subnormals to (signed) zero, as XLA:CPU does in arithmetic."""
  v = np.asarray(v, F32)
  return np.where(np.abs(v) < TINY, np.copysign(F32(0), v), v).astype(F32)


def ref_quantize(
    x: np.ndarray, mode: int, axes: tuple[int, ...], amax: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(values, scale, documented_overflow)`` of one tensor, as the documented numerics say."""
  keep = tuple(1 if a in axes else d for a, d in enumerate(x.shape))
  if not 0 <= mode < N_MODES:
    return np.full(x.shape, np.nan, F32), np.full(keep, np.nan, F32), np.zeros(x.shape, bool)
  m = MODE_TABLE[mode]
  with np.errstate(all="ignore"):
    if not m.scaled:
      values = x if m.name == "fp32" else x.astype(m.dtype).astype(F32)
      overflow = np.isfinite(x) & ~np.isfinite(values)
      return values, np.ones(keep, F32), overflow
    xd = ftz(x)
    a = (
        np.max(np.abs(xd), axis=axes, keepdims=True)
        if amax is None
        else np.broadcast_to(ftz(amax), keep)
    )
    a = a.astype(F32)
    scale = np.where(a < TINY, F32(1), np.maximum(ftz(a * F32(1.0 / m.max_value)), TINY))
    scale = scale.astype(F32)
    scaled = np.clip(ftz(xd * ftz(F32(1) / scale)), -m.max_value, m.max_value).astype(F32)
    values = np.round(scaled) if m.is_int else scaled.astype(m.dtype).astype(F32)
  return values.astype(F32), scale, np.zeros(x.shape, bool)


def ref_dot(
    x: np.ndarray, w: np.ndarray, mode: int, lhs_axes: tuple[int, ...], lhs_amax: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """``(value, tolerance, documented_overflow, exact)`` of one PAK product ``x @ w``."""
  ql, sl, ovl = ref_quantize(x, mode, lhs_axes, lhs_amax)
  qr, sr, ovr = ref_quantize(w, mode, (0,), None)
  out_shape = (x.shape[0], w.shape[1])
  with np.errstate(all="ignore"):
    # The product treats subnormal operands as zero (XLA:CPU); whether a backend does or
    # not, the difference is bounded by those operands' terms, added to the tolerance.
    terms_raw = ql[:, :, None].astype(np.float64) * qr[None, :, :].astype(np.float64)
    terms = ftz(ql)[:, :, None].astype(np.float64) * ftz(qr)[None, :, :].astype(np.float64)
    acc64 = terms.sum(1)
    bound = np.abs(terms).sum(1)
    subnormal_terms = np.nan_to_num(np.abs(terms_raw - terms), nan=0.0, posinf=0.0).sum(1)
    scale = sl.reshape(-1, 1).astype(np.float64) * sr.reshape(1, -1)
    if 0 <= mode < N_MODES and MODE_TABLE[mode].is_int:
      # Exact integer accumulation, then the documented float32 scale-back:
      # (acc * sl) * sr, or (acc * sr) * sl where the first product leaves the range.
      acc, row, col = acc64.astype(F32), sl.reshape(-1, 1), sr.reshape(1, -1)
      first = ftz(ftz(acc * row) * col)
      fits = np.isfinite(first) & ((first != 0) | (acc == 0))
      value = np.where(fits, first, ftz(ftz(acc * col) * row))
      tol = np.zeros(out_shape)
      exact = np.ones(out_shape, bool)
    else:
      value = acc64 * scale
      value = np.where(np.abs(value) < TINY, 0.0 * value, value)  # the result flushes too
      tol = ((K + 3) * EPS * bound + K * TINY + subnormal_terms) * np.abs(scale) + TINY
      exact = np.zeros(out_shape, bool)
    rows_over = ovl.any(1)[:, None] | ovr.any(0)[None, :]
    # The float32 result (or a float32 partial sum) may leave float32's range: inf.
    big = np.finfo(F32).max * (1 - 4 * K * EPS)
    finite_bound = np.where(np.isfinite(terms), np.abs(terms), 0.0).sum(1)
    accum_over = np.isfinite(value) & ((np.abs(value) > big) | (bound * np.abs(scale) > big))
    accum_over |= finite_bound > big  # a float32 product or partial sum overflows
  return value, tol, rows_over | accum_over, exact


# --------------------------------------------------------------------------------------
# Comparison.


class Counts:

  def __init__(self) -> None:
    self.c: collections.Counter = collections.Counter()
    self.examples: list[dict[str, Any]] = []
    self.by_what: collections.Counter = collections.Counter()

  def note(self, kind: str, what: str, **detail: Any) -> None:
    self.c[kind] += 1
    if kind in ("mismatches", "unexpected_nan", "crashes"):
      self.by_what[what] += 1
      if len(self.examples) < 40 and self.by_what[what] <= 2:
        self.examples.append({"kind": kind, "what": what, **detail})


def _bits_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  a, b = np.asarray(a, F32), np.asarray(b, F32)
  return (a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))


def judge(
    counts: Counts,
    what: str,
    ours: np.ndarray,
    ref: np.ndarray,
    overflow: np.ndarray,
    tol: np.ndarray | None = None,
    inputs: Any = None,
) -> None:
  """One case: ``ours`` against ``ref`` (bitwise when ``tol`` is None)."""
  ours = np.asarray(ours, np.float64)
  ref = np.asarray(ref, np.float64)
  if tol is None:
    ok = _bits_equal(ours, ref)
  else:
    with np.errstate(all="ignore"):
      both_nonfinite = ~np.isfinite(ours) & ~np.isfinite(ref)
      same_special = both_nonfinite & ((np.isnan(ours) & np.isnan(ref)) | (ours == ref))
      ok = same_special | (np.isfinite(ours) & np.isfinite(ref) & (np.abs(ours - ref) <= tol))
      # Float32 accumulation overflowing where the float64 reference does not: documented.
      ok |= overflow & ~np.isfinite(ours)
  surprise = ~np.isfinite(ours) & np.isfinite(ref) & ~overflow
  if surprise.any():
    counts.note(
        "unexpected_nan",
        what,
        ours=ours[surprise][:3].tolist(),
        ref=ref[surprise][:3].tolist(),
        inputs=inputs,
    )
  elif not ok.all():
    bad = ~ok
    counts.note(
        "mismatches", what, ours=ours[bad][:3].tolist(), ref=ref[bad][:3].tolist(), inputs=inputs
    )
  elif overflow.any():
    counts.note("documented_overflow", what)
  else:
    counts.note("ok", what)


# --------------------------------------------------------------------------------------
# Runs.


def _styles(fn: Callable, mode: int, allow_python: bool) -> dict[str, Callable]:
  """The same computation with the mode traced, as a constant, and as a Python int."""
  traced = jax.jit(fn)
  styles = {"traced": lambda *a: traced(*a, jnp.int32(mode))}
  const = jnp.int32(mode)
  styles["constant"] = jax.jit(lambda *a: fn(*a, const))
  if allow_python and 0 <= mode < N_MODES:
    styles["python"] = jax.jit(lambda *a: fn(*a, mode))
  return styles


def fuzz_quantizer(counts: Counts, rng: np.random.Generator, per_call: int) -> None:
  for axes_name, axes in REDUCE.items():
    for static in (False, True):
      keep = tuple(1 if a in axes else d for a, d in enumerate(Q_SHAPE))

      def q(x, amax, mode, axes=axes, static=static):
        return formats.quantize(x, mode, axes, amax if static else None)

      batched = jax.vmap(q, in_axes=(0, 0, None))
      traced = jax.jit(batched)
      for mode in list(range(N_MODES)) + list(INVALID):
        x = generate(rng, per_call, Q_SHAPE)
        amax = generate_amax(rng, per_call, keep)
        const = jnp.int32(mode)
        styles = {
            "traced": lambda x, a: traced(x, a, jnp.int32(mode)),
            "constant": jax.jit(lambda x, a: batched(x, a, const)),
        }
        if 0 <= mode < N_MODES:
          styles["python"] = jax.jit(lambda x, a: batched(x, a, mode))
        refs = [
            ref_quantize(x[i], mode, axes, amax[i] if static else None) for i in range(per_call)
        ]
        for style, f in styles.items():
          what = f"quantize mode={mode} axes={axes_name} static={static} {style}"
          try:
            values, scale = (np.asarray(v) for v in f(x, amax))
          except Exception as e:  # noqa: BLE001 - counting crashes is the point
            counts.c["crashes"] += per_call
            counts.examples.append(
                {
                    "kind": "crashes",
                    "what": what,
                    "error": repr(e),
                    "trace": traceback.format_exc()[-800:],
                }
            )
            continue
          for i, (rv, rs, ov) in enumerate(refs):
            judge(
                counts,
                what,
                np.concatenate([values[i].ravel(), scale[i].ravel()]),
                np.concatenate([rv.ravel(), rs.ravel()]),
                np.concatenate([ov.ravel(), np.zeros(rs.size, bool)]),
                inputs=lambda i=i, x=x, a=amax: (x[i].tolist(), a[i].tolist()),
            )


def fuzz_pak(counts: Counts, rng: np.random.Generator, per_call: int) -> None:
  dn = (((1,), (0,)), ((), ()))
  scalings = [s for s in pak.ActivationScaling if s.value in LHS_AXES]
  for scaling in scalings:
    for static in (False, True):
      spec = pak.product_spec(
          lax.dot_general_p,
          dict(
              dimension_numbers=dn,
              precision=None,
              preferred_element_type=jnp.float32,
              out_sharding=None,
          ),
          (M, K),
          (K, N),
          2,
          weight_operand=1,
          activation_scaling=scaling,
      )
      lhs_keep = tuple(1 if a in LHS_AXES[scaling.value] else d for a, d in enumerate((M, K)))

      def run(x, w, amax, mode, spec=spec, static=static):
        return pak.apply(spec, x, w, mode, amax if static else None, None)

      batched = jax.vmap(run, in_axes=(0, 0, 0, None))
      traced = jax.jit(batched)
      for mode in list(range(N_MODES)) + list(INVALID):
        x = generate(rng, per_call, (M, K))
        w = generate(rng, per_call, (K, N))
        amax = generate_amax(rng, per_call, lhs_keep)
        const = jnp.int32(mode)
        styles = {
            "traced": lambda x, w, a: traced(x, w, a, jnp.int32(mode)),
            "constant": jax.jit(lambda x, w, a: batched(x, w, a, const)),
        }
        refs = [
            ref_dot(x[i], w[i], mode, LHS_AXES[scaling.value], amax[i] if static else None)
            for i in range(per_call)
        ]
        for style, f in styles.items():
          what = f"pak mode={mode} scaling={scaling.value} static={static} {style}"
          try:
            out = np.asarray(f(x, w, amax))
          except Exception as e:  # noqa: BLE001
            counts.c["crashes"] += per_call
            counts.examples.append(
                {
                    "kind": "crashes",
                    "what": what,
                    "error": repr(e),
                    "trace": traceback.format_exc()[-800:],
                }
            )
            continue
          for i, (value, tol, overflow, exact) in enumerate(refs):
            judge(
                counts,
                what,
                out[i],
                value,
                overflow,
                None if exact.all() else tol,
                inputs=lambda i=i, x=x, w=w, a=amax: (x[i].tolist(), w[i].tolist(), a[i].tolist()),
            )


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument(
      "--cases-per-call",
      type=int,
      default=500,
      help="tensors per compiled call (cases = this x the 222 calls)",
  )
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--parts", default="quantizer,pak", help="which fuzzers to run")
  parser.add_argument("--out", type=pathlib.Path, default=_REPO / "runs" / "bench" / "fuzz.json")
  args = parser.parse_args(argv)
  start = time.perf_counter()
  rng = np.random.default_rng(args.seed)
  counts = Counts()
  parts = set(args.parts.split(","))
  if "quantizer" in parts:
    fuzz_quantizer(counts, rng, args.cases_per_call)
  if "pak" in parts:
    fuzz_pak(counts, rng, args.cases_per_call)
  c = counts.c
  cases = sum(
      c[k] for k in ("ok", "mismatches", "unexpected_nan", "documented_overflow", "crashes")
  )
  ratios = {
      "fuzz_cases": cases,
      "fuzz_mismatches": c["mismatches"],
      "fuzz_unexpected_nan": c["unexpected_nan"],
      "fuzz_documented_overflow": c["documented_overflow"],
      "fuzz_crashes": c["crashes"],
  }
  wall = round(time.perf_counter() - start, 1)
  for key, value in ratios.items():
    print(f"{key:28s} {value:>9,}")
  for example in counts.examples:
    if callable(example.get("inputs")):
      example["inputs"] = example["inputs"]()
  for example in counts.examples[:10]:
    print("  ", {k: v for k, v in example.items() if k not in ("trace", "inputs")})
  for what, n in counts.by_what.most_common(10):
    print(f"  {n:6d}  {what}")
  result = {
      "ratios": ratios,
      "targets": {k: "== 0" for k in ratios if k not in ("fuzz_cases", "fuzz_documented_overflow")},
      "examples": counts.examples,
      "setup": {
          "seed": args.seed,
          "cases_per_call": args.cases_per_call,
          "wall_s": wall,
          "cpu_count": os.cpu_count(),
          "jax": jax.__version__,
          "backend": jax.default_backend(),
      },
  }
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
  print(f"wrote {args.out} in {wall} s")
  bad = c["mismatches"] + c["unexpected_nan"] + c["crashes"]
  return 1 if bad else 0


if __name__ == "__main__":
  sys.exit(main())
