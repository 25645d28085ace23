"""Benchmarks the activation range: ``max |x|`` with the non-finite check, three ways.

  python scripts/bench_ranges.py [--repeats 21] [--out runs/bench/ranges.json]

Every dynamic scale starts from ``formats.amax_over``: ``max |x|`` per group, NaN where the
group holds a NaN or an infinity. XLA:CPU's max reduction skips NaN, so the check has to be
explicit. Three ways, on MiniLM-L6's activation shapes (64 texts x 64 tokens; per token):

- ``max``: the plain ``max |x|``, no check (the floor; wrong on NaN);
- ``max_plus_sum``: ``max |x| + sum(x - x)`` (aprec before this benchmark);
- ``variadic``: one ``lax.reduce`` carrying the max and "any non-finite"
  (``formats.amax_over`` now).

Each ratio is the median of per-repeat ratios over ``max``, the sides interleaved in a
rotating order. Writes ``"ratios"``: ``<way>_over_max_<shape>``; target for ``variadic``:
<= 1.2 (about one pass over ``x``). Also checks that every way but ``max`` gives NaN
exactly in the groups holding a NaN or an infinity.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import sys
import time

_REPO = pathlib.Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
  sys.path.insert(0, str(_REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from aprec.emulator import formats  # noqa: E402

SHAPES = {"64x64x384": (64, 64, 384), "64x64x1536": (64, 64, 1536), "64x12x64x64": (64, 12, 64, 64)}
TARGETS = {"variadic": 1.2}


def _max(x, axes):
  return jnp.max(jnp.abs(x), axis=axes, keepdims=True)


def _max_plus_sum(x, axes):
  return _max(x, axes) + jnp.sum(x - x, axis=axes, keepdims=True)


WAYS = {"max": _max, "max_plus_sum": _max_plus_sum, "variadic": formats.amax_over}


def _interleaved(fns: dict, repeats: int, calls: int) -> dict[str, list[float]]:
  samples = {k: [] for k in fns}
  names = list(fns)
  for r in range(repeats):
    for k in names[r % len(names) :] + names[: r % len(names)]:
      start = time.perf_counter()
      for _ in range(calls):
        out = fns[k]()
      jax.block_until_ready(out)
      samples[k].append((time.perf_counter() - start) / calls)
  return samples


def measure(repeats: int = 21, calls: int = 10) -> dict:
  """The table (module doc) as the JSON ``main`` writes."""
  ratios, ms, nan_groups = {}, {}, {}
  for name, shape in SHAPES.items():
    axes = (len(shape) - 1,)
    x = jax.random.normal(jax.random.key(0), shape, jnp.float32)
    flat = np.asarray(x).reshape(-1, shape[-1]).copy()
    flat[3, 7], flat[9, 0], flat[11, -1] = np.nan, np.inf, -np.inf
    bad = jnp.asarray(flat.reshape(shape))
    fns = {}
    for way, fn in WAYS.items():
      jitted = jax.jit(lambda v, fn=fn: fn(v, axes))
      if way != "max":
        if not np.array_equal(np.asarray(jitted(x)), np.asarray(_max(x, axes))):
          raise AssertionError(f"{way} differs from max |x| on finite values at {name}")
        nan_groups[f"{way}_{name}"] = int(np.isnan(np.asarray(jitted(bad))).sum())
      fns[way] = (lambda j: lambda: j(x))(jitted)
      jax.block_until_ready(fns[way]())
    samples = _interleaved(fns, repeats, calls)
    for way, s in samples.items():
      ms[f"{way}_{name}"] = 1e3 * statistics.median(s)
      if way != "max":
        ratios[f"{way}_over_max_{name}"] = statistics.median(
            a / b for a, b in zip(s, samples["max"])
        )
  print(f"{'shape':14s} " + " ".join(f"{w:>14s}" for w in WAYS) + "   (ms; ratio over max)")
  for name in SHAPES:
    cells = [f"{ms[f'max_{name}']:8.3f}     "] + [
        f"{ms[f'{w}_{name}']:7.3f} {ratios[f'{w}_over_max_{name}']:5.2f}x"
        for w in WAYS
        if w != "max"
    ]
    print(f"{name:14s} " + " ".join(f"{c:>14s}" for c in cells))
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
