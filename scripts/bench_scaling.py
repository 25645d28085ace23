"""Activation scaling by measurement: fidelity, padding leaks, NaN spread, batch-mates.

For every ``ActivationScaling`` and every mode (uniform assignment):

- reference models (``digits_cnn``, ``digits_vit``, test split): accuracy, max |logit −
  fp32 logit|, KL(p_fp32 ‖ p_mode); how many *other* examples turn NaN when one image is
  NaN (jitted and eager), and whether that image's own logits stay NaN; the largest change
  of an example's logits when its batch-mates are replaced by training images;
- the toy sequence model (``aprec.models.toy_text``, random weights, padded batches):
  quantization error of real positions, and the largest change of real positions' outputs
  when only padded ids change — dynamic, with the mask passed to the emulator, and with
  static (calibrated) scales — and the part that comes from ``p·v`` alone.

Prints a table and writes runs/bench/scaling.json.

  python scripts/bench_scaling.py
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from aprec import models
from aprec.emulator import Emulator
from aprec.emulator.formats import MODES
from aprec.emulator.pak import ActivationScaling
from aprec.models import toy_text

SCALINGS = tuple(s.value for s in ActivationScaling)
OUT = pathlib.Path("runs/bench/scaling.json")


def _kl(logits_ref, logits):
  p = jax.nn.log_softmax(logits_ref.astype(jnp.float32))
  q = jax.nn.log_softmax(logits.astype(jnp.float32))
  return float(jnp.mean(jnp.sum(jnp.exp(p) * (p - q), -1)))


def reference_model(name: str) -> dict:
  model = models.load(name)
  x, y = model.data.test.x, model.data.test.y
  rows = {}
  for scaling in SCALINGS:
    emu = Emulator(model.apply_fn, model.params, x, activation_scaling=scaling)
    run = jax.jit(emu)
    mates = np.array(model.data.train.x[: len(x)])
    mates[0] = x[0]  # example 0 kept, its batch-mates replaced by training images
    bad = np.array(x)
    bad[5] = np.nan
    ref = run(model.params, x, emu.assignment("fp32"))
    for mode in MODES:
      a = emu.assignment(mode)
      out = run(model.params, x, a)
      nan_out = np.isnan(np.asarray(run(model.params, bad, a))).any(-1)
      eager_nan = np.isnan(np.asarray(emu(model.params, bad, a))).any(-1)
      rows[f"{scaling}/{mode}"] = {
          "accuracy": float(np.mean(np.argmax(out, -1) == y)),
          "max_abs_logit_error": float(jnp.max(jnp.abs(out - ref))),
          "kl": _kl(ref, out),
          "other_examples_nan": int(nan_out.sum() - nan_out[5]),
          "nan_example_is_nan": bool(nan_out[5]),
          "other_examples_nan_eager": int(eager_nan.sum() - eager_nan[5]),
          "nan_example_is_nan_eager": bool(eager_nan[5]),
          "batch_mate_change": float(jnp.max(jnp.abs(run(model.params, mates, a)[0] - out[0]))),
      }
  return rows


def sequence_model() -> dict:
  module = toy_text.TokenEncoder(features=32, heads=4, rngs=nnx.Rngs(0))
  ids, mask = toy_text.example_inputs(batch=16, length=24)
  repadded = toy_text.repad(ids, mask)
  rows = {}
  for scaling in SCALINGS:
    emu = Emulator.from_nnx(module, ids, mask, activation_scaling=scaling)
    run = jax.jit(emu)
    pv = [i for i, op in enumerate(emu.ops) if not op.has_weight][-1]  # attention's p·v
    static = emu.calibrate(emu.params, [(ids, mask), (repadded, mask)])
    ref = np.asarray(run(emu.params, (ids, mask), emu.assignment("fp32")))[mask]
    for mode in MODES:
      a = emu.assignment(mode)
      only_pv = np.zeros(len(emu.ops), np.int32)
      only_pv[pv] = a[pv]
      both = lambda **kw: [
          np.asarray(run(emu.params, (i, mask), m, **kw))[mask]
          for i, m in ((ids, a), (repadded, a))
      ]
      out, out2 = both()
      masked, masked2 = both(mask=mask)
      fixed, fixed2 = both(activation_amax=static)
      pv1, pv2 = (np.asarray(run(emu.params, (i, mask), only_pv))[mask] for i in (ids, repadded))
      qerr = float(np.max(np.abs(out - ref)))
      leak = float(np.max(np.abs(out - out2)))
      rows[f"{scaling}/{mode}"] = {
          "quantization_error": qerr,
          "padding_leak": leak,
          "leak_over_error": leak / qerr if qerr else 0.0,
          "padding_leak_masked": float(np.max(np.abs(masked - masked2))),
          "padding_leak_static": float(np.max(np.abs(fixed - fixed2))),
          "padding_leak_pv_only": float(np.max(np.abs(pv1 - pv2))),
      }
  return rows


def main() -> None:
  result = {"sequence": sequence_model()}
  for name in models.NAMES:
    result[name] = reference_model(name)
  print(
      f"{'model':11} {'scaling':12} {'mode':9} {'acc':>6} {'max|Δy|':>9} {'KL':>9} "
      f"{'NaN→others':>10} {'mates Δ':>8} | {'pad leak':>9} {'/qerr':>6} {'masked':>7} "
      f"{'static':>7} {'p·v only':>9}"
  )
  for scaling in SCALINGS:
    for mode in MODES:
      key = f"{scaling}/{mode}"
      s = result["sequence"][key]
      for name in models.NAMES:
        r = result[name][key]
        print(
            f"{name:11} {scaling:12} {mode:9} {r['accuracy']:6.4f} "
            f"{r['max_abs_logit_error']:9.2e} {r['kl']:9.2e} "
            f"{r['other_examples_nan']:4d}/{r['other_examples_nan_eager']:<5d} "
            f"{r['batch_mate_change']:8.1e} |"
        )
      print(
          f"{'sequence':11} {scaling:12} {mode:9} {'':6} {s['quantization_error']:9.2e} "
          f"{'':9} {'':10} {'':8} | {s['padding_leak']:9.2e} {s['leak_over_error']:6.3f} "
          f"{s['padding_leak_masked']:7.1e} {s['padding_leak_static']:7.1e} "
          f"{s['padding_leak_pv_only']:9.2e}"
      )
  OUT.parent.mkdir(parents=True, exist_ok=True)
  OUT.write_text(json.dumps(result, indent=1))
  print(f"wrote {OUT}")


if __name__ == "__main__":
  main()
