"""Benchmarks the cost model, the simulator and the GPU spec calibration.

Usage::

  python scripts/bench_cost.py [--out runs/bench/cost.json]

Prints a table and writes JSON whose ``"ratios"`` hold the headline figures:

- ``cost_evals_per_s``: cost-model evaluations per second, 10,000 random assignments of
  the digits CNN's op table vmapped in one jitted call (CPU).
- ``sim_steps_per_s``: simulator steps per second in one jitted ``lax.scan`` episode
  (contention scenario with mild sensor faults, digits op table, batch 360);
  ``sim_steps_per_s_batched`` runs 256 episodes under ``vmap``.
- ``int4_bytes_over_fp32``: bytes of the digits CNN's weights stored at int4 (two per byte,
  plus float32 per-channel scales) over their fp32 bytes, measured on the packed arrays
  (``_vit`` for the ViT); the data alone is 1/8.
- ``gpu_fit_mape``: held-out mean absolute percentage error of ``datacenter_gpu`` fitted to
  the H200 anchors (the n = 8192 products held out); also every-third-row hold-out.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import pathlib
import statistics
import sys
import time

_REPO = pathlib.Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
  sys.path.insert(0, str(_REPO))  # run from a checkout without installing the package

import jax  # noqa: E402
import numpy as np  # noqa: E402

from aprec import models  # noqa: E402
from aprec.hardware import scenarios, simulator  # noqa: E402
from aprec.hardware import fit as calibrate
from aprec.hardware import cost
from aprec.emulator import dma
from aprec.hardware import specs as hardware
from aprec.emulator.core import Emulator  # noqa: E402
from aprec.emulator.formats import MODES  # noqa: E402
from aprec.emulator.ops import Op  # noqa: E402

N_ASSIGNMENTS = 10_000
SIM_STEPS = 100_000
BATCH_EPISODES, BATCH_STEPS = 256, 2_000


def model_emulator(name: str):
  """The emulator of a shipped model on its 360-image test batch, and the params."""
  model = models.load(name)
  return Emulator(model.apply_fn, model.params, model.data.test.x), model.params


def bench_dma() -> dict:
  """Weight bytes at int4 (packed, with per-channel scales) over fp32, on the real arrays."""
  out = {}
  for name in models.NAMES:
    emu, params = model_emulator(name)
    fp32 = dma.storage_bytes(emu.store_weights(params, emu.assignment("fp32")))
    int4 = emu.store_weights(params, emu.assignment("int4"))
    data = sum(int(np.asarray(p.data).nbytes) for p in int4 if p is not None)
    out[name] = {
        "fp32_bytes": fp32,
        "int4_bytes": dma.storage_bytes(int4),
        "int4_data_bytes": data,
        "int4_scale_bytes": dma.storage_bytes(int4) - data,
        "int4_over_fp32": dma.storage_bytes(int4) / fp32,
        "int4_data_over_fp32": data / fp32,
    }
  return out


def _best_of(fn, repeats: int = 5) -> float:
  """Median wall seconds of ``fn()`` (already compiled) over ``repeats`` runs."""
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def bench_cost(ops: list[Op], spec: hardware.NNPSpec) -> float:
  arrays, state = cost.op_arrays(ops), cost.nominal_state(spec)
  modes = jax.random.randint(jax.random.key(0), (N_ASSIGNMENTS, len(ops)), 0, len(MODES))
  fn = jax.jit(jax.vmap(lambda m: cost.cost(arrays, cost.one_hot(m), spec, state)))
  jax.block_until_ready(fn(modes))
  return N_ASSIGNMENTS / _best_of(lambda: fn(modes))


def bench_simulator(ops: list[Op], spec: hardware.NNPSpec) -> tuple[float, float]:
  params = scenarios.scenario("contention", spec, ops, faults="mild")
  init = simulator.init_state(params)
  modes = np.full(len(ops), 2, np.int32)
  run = lambda k, n: simulator.rollout(params, init, modes, k, n_steps=n)[1]
  jax.block_until_ready(run(jax.random.key(0), SIM_STEPS))
  single = SIM_STEPS / _best_of(lambda: run(jax.random.key(1), SIM_STEPS), repeats=3)
  keys = jax.random.split(jax.random.key(2), BATCH_EPISODES)
  batched_fn = jax.jit(jax.vmap(lambda k: run(k, BATCH_STEPS)))
  jax.block_until_ready(batched_fn(keys))
  batched = BATCH_EPISODES * BATCH_STEPS / _best_of(lambda: batched_fn(keys), repeats=3)
  return single, batched


def bench_fit() -> dict:
  rows = calibrate.load_anchor_measurements(calibrate.PACKAGED_ANCHORS_PATH)
  spec = hardware.datacenter_gpu()
  out = {}
  for protocol, (train, held) in {
      "n8192": calibrate.split_by_size(rows, 8192),
      "every_third": calibrate.split_holdout(rows, 3),
  }.items():
    fitted, history = calibrate.fit_spec(spec, train, steps=1000, learning_rate=0.1)
    out[protocol] = {
        "train_rows": len(train),
        "held_rows": len(held),
        "loss_start": float(history[0]),
        "loss_end": float(history[-1]),
        "mape_train_pct": calibrate.mape(fitted, train),
        "mape_held_pct": calibrate.mape(fitted, held),
        "mape_held_unfitted_pct": calibrate.mape(spec, held),
        "fitted": {
            "tflops": dict(
                zip(MODES, (np.asarray(fitted.peak_macs_per_s) * 2e-12).round(1).tolist())
            ),
            "dram_bandwidth_tb_s": float(fitted.dram_bandwidth_bytes_per_s) / 1e12,
            "sram_bandwidth_tb_s": float(fitted.sram_bandwidth_bytes_per_s) / 1e12,
            "op_overhead_us": float(fitted.op_overhead_s) * 1e6,
        },
        "table": calibrate.error_table(fitted, train, held),
    }
  return out


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=str(_REPO / "runs" / "bench" / "cost.json"))
  args = parser.parse_args(argv)

  ops, spec = model_emulator("digits_cnn")[0].ops, hardware.edge_npu()
  storage = bench_dma()
  evals_per_s = bench_cost(ops, spec)
  steps_per_s, batched_steps_per_s = bench_simulator(ops, spec)
  fit = bench_fit()

  print(f"{'figure':<34}{'value':>16}")
  print(f"{'cost_evals_per_s':<34}{evals_per_s:>16,.0f}")
  print(f"{'sim_steps_per_s (1 episode)':<34}{steps_per_s:>16,.0f}")
  print(f"{'sim_steps_per_s (256 episodes)':<34}{batched_steps_per_s:>16,.0f}")
  for protocol, r in fit.items():
    print(
        f"{'gpu_fit_mape held ' + protocol:<34}{r['mape_held_pct']:>15.1f}%"
        f"   (train {r['mape_train_pct']:.1f}%, unfitted {r['mape_held_unfitted_pct']:.1f}%)"
    )
  for name, r in storage.items():
    print(
        f"{'int4_bytes_over_fp32 ' + name:<34}{r['int4_over_fp32']:>16.4f}"
        f"   ({r['int4_bytes']:,} of {r['fp32_bytes']:,} B; data alone "
        f"{r['int4_data_over_fp32']:.4f})"
    )
  print(f"\ncalibration, n = 8192 held out (fitted: {fit['n8192']['fitted']})")
  print(f"{'row':<34}{'measured ms':>12}{'predicted ms':>14}{'error':>8}")
  for r in fit["n8192"]["table"]:
    flag = "  held out" if r["held_out"] else ""
    print(
        f"{r['label']:<34}{r['measured_ms']:>12.4f}{r['predicted_ms']:>14.4f}"
        f"{r['error_pct']:>7.1f}%{flag}"
    )

  report = {
      "ratios": {
          "cost_evals_per_s": evals_per_s,
          "sim_steps_per_s": steps_per_s,
          "sim_steps_per_s_batched": batched_steps_per_s,
          "gpu_fit_mape": fit["n8192"]["mape_held_pct"],
          "gpu_fit_mape_every_third": fit["every_third"]["mape_held_pct"],
          "int4_bytes_over_fp32": storage["digits_cnn"]["int4_over_fp32"],
          "int4_bytes_over_fp32_vit": storage["digits_vit"]["int4_over_fp32"],
      },
      "dma": storage,
      "setup": {
          "ops": "digits_cnn, batch 360",
          "spec": spec.name,
          "assignments": N_ASSIGNMENTS,
          "sim_steps": SIM_STEPS,
          "batched": [BATCH_EPISODES, BATCH_STEPS],
          "scenario": "contention, mild faults",
          "devices": [str(d) for d in jax.devices()],
          "versions": {p: importlib.metadata.version(p) for p in ("jax", "jaxlib", "optax")},
      },
      "calibration": fit,
  }
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(report, indent=1))
  print(f"\nwrote {out}")


if __name__ == "__main__":
  main()
