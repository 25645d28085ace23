"""Benchmarks the activation range: ``max |x|`` with the non-finite check, three ways.

  python scripts/bench_ranges.py [--repeats 21] [--out runs/bench/ranges.json]

Every dynamic scale starts from ``ranges.amax_over``: ``max |x|`` per group, NaN where the
group holds a NaN or an infinity. XLA:CPU's max reduction skips NaN, so the check has to be
explicit. On MiniLM-L6's shapes (64 texts x 64 tokens): activations per token (over the
last axis) and a weight per output channel (over the first):

- ``max``: the plain ``max |x|``, no check (the floor; wrong on NaN);
- ``max_plus_sum``: ``max |x| + sum(x - x)``;
- ``variadic``: one ``lax.reduce`` carrying the max and "any non-finite";
- ``amax_over``: ``ranges.amax_over``, which picks ``variadic`` when the last axis is
  reduced and ``max_plus_sum`` otherwise.

Each ratio is the median of per-repeat ratios over ``max``, the sides interleaved in a
rotating order. Writes ``"ratios"``: ``<way>_over_max_<shape>``; target for ``amax_over``:
<= 2.0 on every shape (the check costs at most one more pass over ``x``). Also checks that
every way but ``max`` equals ``max`` on finite input and gives NaN exactly in the three
groups holding a NaN or an infinity.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import sys

_REPO = pathlib.Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
  sys.path.insert(0, str(_REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from aprec.emulator import ranges  # noqa: E402
from timing import interleaved, ratio  # noqa: E402

# name: (shape, reduced axes)
SHAPES = {
    "act_64x64x384": ((64, 64, 384), (2,)),
    "act_64x64x1536": ((64, 64, 1536), (2,)),
    "act_64x12x64x64": ((64, 12, 64, 64), (3,)),
    "weight_384x1536": ((384, 1536), (0,)),
    "weight_1536x384": ((1536, 384), (0,)),
}
TARGETS = {"amax_over": 2.0}


def _max(x, axes):
  return jnp.max(jnp.abs(x), axis=axes, keepdims=True)


def _max_plus_sum(x, axes):
  return _max(x, axes) + jnp.sum(x - x, axis=axes, keepdims=True)


def _variadic(x, axes):
  init = (jnp.asarray(-jnp.inf, x.dtype), jnp.asarray(False))
  combine = lambda a, b: (jnp.maximum(a[0], b[0]), a[1] | b[1])
  amax, bad = jax.lax.reduce((jnp.abs(x), ~jnp.isfinite(x)), init, combine, axes)
  amax, bad = jnp.expand_dims(amax, axes), jnp.expand_dims(bad, axes)
  return jnp.where(bad, jnp.nan, amax)


WAYS = {
    "max": _max,
    "max_plus_sum": _max_plus_sum,
    "variadic": _variadic,
    "amax_over": ranges.amax_over,
}


def measure(repeats: int = 21, calls: int = 10) -> dict:
  """The table (module doc) as the JSON ``main`` writes."""
  ratios, ms, nan_groups = {}, {}, {}
  for name, (shape, axes) in SHAPES.items():
    x = jax.random.normal(jax.random.key(0), shape, jnp.float32)
    # Three groups poisoned: rows of the flattened kept axes, columns for a weight.
    flat = np.moveaxis(np.asarray(x), axes[0], -1).reshape(-1, shape[axes[0]]).copy()
    flat[3, 7], flat[9, 0], flat[11, -1] = np.nan, np.inf, -np.inf
    moved = [d for i, d in enumerate(shape) if i != axes[0]] + [shape[axes[0]]]
    bad = jnp.asarray(np.moveaxis(flat.reshape(moved), -1, axes[0]))
    fns = {}
    for way, fn in WAYS.items():
      jitted = jax.jit(lambda v, fn=fn: fn(v, axes))
      if way != "max":
        if not np.array_equal(np.asarray(jitted(x)), np.asarray(_max(x, axes))):
          raise AssertionError(f"{way} differs from max |x| on finite values at {name}")
        nan_groups[f"{way}_{name}"] = int(np.isnan(np.asarray(jitted(bad))).sum())
      fns[way] = (lambda j: lambda: j(x))(jitted)
      jax.block_until_ready(fns[way]())
    samples = interleaved(fns, repeats, calls)
    for way, s in samples.items():
      ms[f"{way}_{name}"] = 1e3 * statistics.median(s)
      if way != "max":
        ratios[f"{way}_over_max_{name}"] = ratio(s, samples["max"])
  print(f"{'shape':16s} " + " ".join(f"{w:>14s}" for w in WAYS) + "   (ms; ratio over max)")
  for name in SHAPES:
    cells = [f"{ms[f'max_{name}']:8.3f}     "] + [
        f"{ms[f'{w}_{name}']:7.3f} {ratios[f'{w}_over_max_{name}']:5.2f}x"
        for w in WAYS
        if w != "max"
    ]
    print(f"{name:16s} " + " ".join(f"{c:>14s}" for c in cells))
  print("NaN groups on the poisoned input (3 expected):", nan_groups)
  return {
      "ratios": ratios,
      "targets": {f"{w}_over_max": t for w, t in TARGETS.items()},
      "ms": ms,
      "nan_groups_of_3": nan_groups,
      "repeats": repeats,
      "calls_per_sample": calls,
      "platform": jax.devices()[0].platform,
      "machine": platform.machine(),
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=21)
  parser.add_argument("--calls", type=int, default=10)
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/bench/ranges.json"))
  args = parser.parse_args()
  result = measure(args.repeats, args.calls)
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(result, indent=1) + "\n")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
