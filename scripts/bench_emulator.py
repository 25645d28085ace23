"""Benchmarks the NNP emulator: speed against plain JAX and qwix, and recompilation cost.

Usage::

  python scripts/bench_emulator.py [--repeats 30] [--out runs/bench/emulator.json]

Prints a table and writes JSON whose ``"ratios"`` hold the headline figures, measured on
this machine's CPU (and repeated on the first accelerator when JAX sees one; every number
in ``"runs"`` carries its ``platform`` and ``device_kind``, and the top-level ``"ratios"``
are the CPU run's). Lower is better for every ratio:

- ``int8_over_fp32`` (target <= 1.5): one forward pass of the digits CNN on the test split,
  through ``jax.jit(emulator)`` with every op at ``int8``, over the plain
  ``jax.jit(apply_fn)`` fp32 forward. ``int8_over_fp32_vit`` is the same for the ViT.
- ``vmapped_over_loop`` (target <= 1.0): 32 random assignments (all seven modes) in one
  ``jax.jit(jax.vmap(emulator, in_axes=(None, None, 0)))`` call, over 32 separate calls
  of the already compiled ``jax.jit(emulator)`` (dispatch included). Digits CNN;
  ``vmapped_over_loop_vit`` for the ViT. ``sweep_over_loop`` is the same batch through
  ``emulator.sweep`` (one compiled call that runs the assignments one after another on
  each device): a batched mode index makes every per-mode branch a select over all seven
  modes and every conv with batched weights a grouped conv, which raw ``vmap`` pays for.
- ``ours_over_qwix`` (target <= 1.0): the emulator at uniform ``int8`` over the same CNN
  quantized to int8 by qwix (``QtProvider``, dynamic-range int8 weights and activations,
  int8 x int8 -> int32 products), configured with our granularity and grid: weights per
  output channel, activations per tensor, ``scale = absmax / 127``. The JSON also holds
  qwix's default granularity (activations per example/token, ``absmax / 127.5``) as
  ``ours_over_qwix_default``, and the relative logit differences ours/qwix/fp32.
- ``ours_over_qwix_minilm_l6`` (target <= 1.0): the same peer comparison on a real model,
  all-MiniLM-L6-v2 with its real weights (``scripts/bench_minilm.py``: uniform ``int8``,
  activations per token, the emulator's own call with ``integer_fast_path=True``, against
  qwix's int8 at its default granularity, on 64 test texts; the same under ``jax.jit``
  (the assignment traced) as ``ours_jit_over_qwix_minilm_l6``, the default setting as
  ``ours_general_over_qwix_minilm_l6``; both outputs' mean 1 - cos to fp32 in the JSON's
  ``"minilm"``). Run alone with ``--only minilm``; ``all`` runs it last.
- ``compiles_per_100_switches`` (expect 1): XLA compilations while switching 100 times
  among 10 random per-layer assignments (fp32 / int8 / fp8_e4m3 per layer) through one
  ``jax.jit(emulator)``, starting cold. ``qwix_compiles_per_100_switches``: the same
  schedule with qwix, which bakes precisions into the model, so each distinct assignment
  is a new quantized model and a new compilation (even with the models cached by
  assignment, which this benchmark does; rebuilding per switch would compile every switch).
  Wall times of the 100 switches (compilation included) sit next to the counts.
- ``export_over_emulator`` (target <= 1.0): the exported artifact (``aprec.export``:
  stored weights, static modes, ``jax.export``) called through ``aprec.export.load`` on the
  test split, over ``jax.jit(emulator)`` at the same mixed assignment (``EXPORT_ASSIGNMENTS``).
  ``export_bytes_over_fp32``: the artifact's array bytes (weights in their storage formats
  with scales, plus biases and norms at fp32) over all parameters at fp32. ``_vit`` for the
  ViT. ``--only export`` runs just these and merges them into an existing ``--out`` JSON.

- ``int8_over_fp32_scan`` (target <= 1.5): a transformer whose 8 layers are stacked with
  linen ``nn.scan`` (pre-LN attention + MLP blocks, d_model 128, 4 heads, MLP 512,
  batch 8 x 32 tokens), every op of every layer at ``int8`` through ``jax.jit(emulator)``,
  over the plain ``jax.jit(apply_fn)`` fp32 forward. ``compiles_per_30_switches_scan``
  (expect 1): XLA compilations over 30 random per-layer assignments (all seven modes),
  starting cold. ``compile_32_over_8_scan`` (target <= 1.5): trace + lower + compile time
  of ``jax.jit(emulator)`` at 32 layers over 8 layers (best of two fresh emulators each):
  flat when the scan stays a loop. ``--only scan`` runs just these and updates their keys
  in an existing JSON.

Timing: everything is compiled first; each side of a ratio is timed as a loop of calls
ended by ``block_until_ready``, the sides interleaved (A, B, A, B, ... in a rotating order)
and each ratio is the median over repeats of the paired per-repeat ratios.

The trained checkpoints are read from ``checkpoints/`` (polled for up to ``--wait``
seconds while they are being written); ``--untrained`` uses freshly initialised parameters
instead (timings are the same, accuracies and differences are not meaningful).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import pathlib
import platform as platform_lib
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

_REPO = pathlib.Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
  sys.path.insert(0, str(_REPO))  # run from a checkout without installing the package

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import qwix  # noqa: E402
from flax import linen as nn  # noqa: E402
from qwix._src.utils import flax_util as qwix_flax_util  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import aprec  # noqa: E402
from aprec.models import data as data_lib  # noqa: E402
from aprec import models  # noqa: E402
from aprec.models import digits_cnn  # noqa: E402

TARGETS: dict[str, tuple[str, float]] = {
    "int8_over_fp32": ("<=", 1.5),
    "int8_over_fp32_vit": ("<=", 1.5),
    "vmapped_over_loop": ("<=", 1.0),
    "vmapped_over_loop_vit": ("<=", 1.0),
    "sweep_over_loop": ("<=", 1.0),
    "sweep_over_loop_vit": ("<=", 1.0),
    "ours_over_qwix": ("<=", 1.0),
    "ours_over_qwix_minilm_l6": ("<=", 1.0),
    "compiles_per_100_switches": ("<=", 1.0),
    "export_over_emulator": ("<=", 1.0),
    "export_over_emulator_vit": ("<=", 1.0),
    "int8_over_fp32_scan": ("<=", 1.5),
    "compiles_per_30_switches_scan": ("<=", 1.0),
    "compile_32_over_8_scan": ("<=", 1.5),
    "compiles_per_30_switches_unjitted": ("<=", 1.0),
    "unjitted_over_jitted": ("<=", 2.0),
}
EXPORT_ASSIGNMENTS = {
    "digits_cnn": "int8,Conv_0=fp8_e4m3,Dense_0=int4,Dense_1=bf16",
    "digits_vit": "int8,patch_embed=fp8_e4m3,blocks/0/mlp_in=int4,blocks/1/mlp_in=int4,head=bf16",
}
N_UNJITTED_SWITCHES = 30
N_VMAPPED = 32
N_SWITCHES = 100
N_DISTINCT = 10
SWITCH_MODES = ("fp32", "int8", "fp8_e4m3")  # per-layer choices qwix can also express on CPU
_QWIX_QTYPES = {"fp32": None, "int8": "int8", "fp8_e4m3": jnp.float8_e4m3fn}
_BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_TARGET_SAMPLE_S = 0.02  # each timed sample loops calls for about this long


# --------------------------------------------------------------------------------------
# Measurement helpers.


class CompileCounter:
  """Counts XLA backend compilations (``jax.monitoring``) while it is installed."""

  def __init__(self) -> None:
    self.count = 0

  def _listener(self, event: str, duration: float, **kwargs: Any) -> None:
    del duration, kwargs
    if event == _BACKEND_COMPILE_EVENT:
      self.count += 1

  def __enter__(self) -> CompileCounter:
    jax.monitoring.register_event_duration_secs_listener(self._listener)
    return self

  def __exit__(self, *exc: Any) -> None:
    jax.monitoring.unregister_event_duration_listener(self._listener)


def _time_once(fn: Callable[[], Any]) -> float:
  t = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - t


def _inner_calls(fn: Callable[[], Any]) -> int:
  """Calls per timed sample so that one sample lasts about ``_TARGET_SAMPLE_S``."""
  single = min(_time_once(fn) for _ in range(3))
  return max(1, int(round(_TARGET_SAMPLE_S / max(single, 1e-6))))


def interleaved(
    fns: dict[str, Callable[[], Any]], repeats: int, inner: dict[str, int] | None = None
) -> dict[str, list[float]]:
  """Per-call seconds of each (compiled) function, sampled in interleaved order.

  Each repeat times every function once (``inner[name]`` calls, then
  ``block_until_ready``); the order rotates between repeats so no side always runs first.
  """
  names = list(fns)
  if inner is None:
    inner = {n: _inner_calls(fns[n]) for n in names}
  samples: dict[str, list[float]] = {n: [] for n in names}
  for r in range(repeats):
    for k in range(len(names)):
      name = names[(r + k) % len(names)]
      fn, n = fns[name], inner[name]
      t = time.perf_counter()
      out = None
      for _ in range(n):
        out = fn()
      jax.block_until_ready(out)
      samples[name].append((time.perf_counter() - t) / n)
  return samples


def paired_ratio(num: Sequence[float], den: Sequence[float]) -> float:
  """Median of the per-repeat ratios ``num[i] / den[i]`` (robust to drift)."""
  return float(statistics.median(a / b for a, b in zip(num, den)))


def ratio_quartiles(num: Sequence[float], den: Sequence[float]) -> list[float]:
  """25th and 75th percentiles of the per-repeat ratios: how noisy the machine was."""
  return [round(float(q), 4) for q in np.percentile(np.divide(num, den), [25, 75])]


def _ms(samples: Sequence[float]) -> float:
  return round(1e3 * statistics.median(samples), 4)


def _rel(a: jax.Array, b: jax.Array) -> float:
  """``||a - b|| / ||b||``."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _accuracy(logits: jax.Array, labels: np.ndarray) -> float:
  return float(np.mean(np.argmax(np.asarray(logits), -1) == labels))


_HLO_PRODUCT = re.compile(r"= (\w+)\[[^\]]*\][^ ]* (convolution|dot)\(")


def jaxpr_stats(fn: Callable, *args: Any) -> dict[str, int]:
  """Primitive counts in ``fn``'s jaxpr, sub-jaxprs included (tracing only, no compile)."""
  text = str(jax.make_jaxpr(fn)(*args))
  names = ("cond", "conv_general_dilated", "dot_general", "select_n", "round")
  return {n: len(re.findall(rf"\b{n}\[", text)) + len(re.findall(rf"= {n} ", text)) for n in names}


def hlo_stats(fn: Callable, *args: Any) -> dict[str, Any]:
  """Counts of the ops that matter in ``fn``'s optimised HLO (compiles once more)."""
  text = jax.jit(fn).lower(*args).compile().as_text()
  products: dict[str, int] = {}
  for dtype, kind in _HLO_PRODUCT.findall(text):
    products[f"{kind}->{dtype}"] = products.get(f"{kind}->{dtype}", 0) + 1
  return {
      "conditionals": len(re.findall(r" conditional\(", text)),
      "fusions": len(re.findall(r" fusion\(", text)),
      "copies": len(re.findall(r" copy\(", text)),
      "custom_calls": len(re.findall(r" custom-call\(", text)),
      "products": dict(sorted(products.items())),
  }


# --------------------------------------------------------------------------------------
# Models and qwix.


def load_model(name: str, *, wait_s: float, untrained: bool) -> models.LoadedModel:
  """``models.load(name)``, polling every 60 s while its checkpoint is still missing."""
  if untrained:
    apply_fn, params = models.build(name)
    return models.LoadedModel(
        apply_fn=apply_fn,
        params=params,
        data=data_lib.load_digits_splits(models.DATA_SEED),
        metadata={"untrained": True},
        name=name,
    )
  deadline = time.monotonic() + wait_s
  while True:
    try:
      return models.load(name)
    except FileNotFoundError:
      if time.monotonic() >= deadline:
        raise
      print(f"checkpoint for {name} not found yet; polling again in 60 s", flush=True)
      time.sleep(60)


class _MatchedQtProvider(qwix.QtProvider):
  """qwix's QT provider with our granularity: activations per tensor, weights per channel.

  Public QtRule fields can only disable channelwise scales for both operands at once
  (``disable_channelwise_axes``), which would make the weights per-tensor too; the conv
  config ignores ``additional_qt_config``. So this overrides the two (private) config
  builders to disable channelwise scales on the non-weight operand only.
  """

  def _create_conv_general_qt_config(self, rule, op_id, lhs, rhs):
    config = super()._create_conv_general_qt_config(rule, op_id, lhs, rhs)
    return dataclasses.replace(config, lhs_disable_channelwise_axes=True)  # lhs = activation

  def _create_dot_general_qt_config(self, rule, op_id, lhs, rhs):
    config = super()._create_dot_general_qt_config(rule, op_id, lhs, rhs)
    return dataclasses.replace(
        config,
        lhs_disable_channelwise_axes=qwix_flax_util.find_param(lhs) is None,
        rhs_disable_channelwise_axes=qwix_flax_util.find_param(rhs) is None,
    )


# qwix's symmetric int8 bound is 127.5 (scale = absmax / 127.5); ours is 127. Scaling the
# calibrated absmax by 127.5 / 127 gives qwix exactly our grid, scale = absmax / 127.
_INT8_TO_OUR_GRID = f"absmax,{127.5 / 127!r}"


def qwix_int8_cnn(matched: bool, module_path: str = ".*") -> Callable[[Any, jax.Array], jax.Array]:
  """The digits CNN with the layers matching ``module_path`` quantized to int8 by qwix."""
  if matched:
    rule = qwix.QtRule(
        module_path=module_path,
        weight_qtype="int8",
        act_qtype="int8",
        weight_calibration_method=_INT8_TO_OUR_GRID,
        act_calibration_method=_INT8_TO_OUR_GRID,
    )
    provider: qwix.QtProvider = _MatchedQtProvider([rule])
  else:
    provider = qwix.QtProvider(
        [qwix.QtRule(module_path=module_path, weight_qtype="int8", act_qtype="int8")]
    )
  return jax.jit(qwix.quantize_model(digits_cnn.DigitsCNN(), provider).apply)


def qwix_per_layer_cnn(assignment: dict[str, str]) -> Callable[[Any, jax.Array], jax.Array]:
  """A qwix model of the digits CNN with one precision per layer (``SWITCH_MODES``)."""
  rules = []
  for layer, mode in assignment.items():
    qtype = _QWIX_QTYPES[mode]
    if qtype is not None:
      rules.append(qwix.QtRule(module_path=re.escape(layer), weight_qtype=qtype, act_qtype=qtype))
  return jax.jit(qwix.quantize_model(digits_cnn.DigitsCNN(), qwix.QtProvider(rules)).apply)


QWIX_GRANULARITY = {
    "provider": "qwix.QtProvider (quantized training; forward = dynamic-range quantization)",
    "product": "int8 x int8 -> int32 (lax.conv_general_dilated / dot_general with "
    "preferred_element_type=int32), then scales multiplied onto the output",
    "matched (ours_over_qwix)": {
        "weights": "per output channel, symmetric absmax (same as ours)",
        "activations": "per tensor, symmetric absmax, dynamic (same as ours), via a "
        "QtProvider subclass overriding _create_{conv,dot}_general_qt_config "
        "to set *_disable_channelwise_axes on the activation operand only",
        "grid": "weight/act_calibration_method='absmax,127.5/127' so scale = absmax / 127 "
        "(qwix's int8 bound is 127.5); rounding half-to-even like ours",
    },
    "default (ours_over_qwix_default)": {
        "weights": "per output channel, symmetric absmax",
        "activations": "dynamic, one scale per example for convs (channelwise on the "
        "batch axis) and per row (example/token) for dense layers: finer "
        "than ours (per tensor)",
        "grid": "scale = absmax / 127.5 (qwix's symmetric int8 bound): a step 0.4% "
        "finer than ours, absmax itself lands on a rounding tie",
    },
    "caveats": "qwix's QT forward is real integer arithmetic (QArray int8 operands, "
    "int32 accumulation), not dequantize-then-float fake quantization; qwix "
    "int4 products fail to compile on XLA:CPU ('custom element sizes on "
    "non-sub-byte types'), so the switching benchmark uses fp32 / int8 / "
    "fp8_e4m3 per layer on both sides",
}


# --------------------------------------------------------------------------------------
# The benchmarks. Each returns details; ratios are collected by the caller.


def bench_int8_over_fp32(
    model: models.LoadedModel, repeats: int, device: jax.Device
) -> dict[str, Any]:
  params = jax.device_put(model.params, device)
  x = jax.device_put(jnp.asarray(model.data.test.x), device)
  emu = aprec.Emulator(model.apply_fn, params, x)
  fp32 = jax.jit(model.apply_fn)
  ours = jax.jit(emu)
  int8 = jax.device_put(emu.assignment("int8"), device)
  at_fp32 = jax.device_put(emu.assignment("fp32"), device)
  t_compile_fp32 = _time_once(lambda: fp32(params, x))
  t_compile_ours = _time_once(lambda: ours(params, x, int8))
  s = interleaved(
      {
          "fp32": lambda: fp32(params, x),
          "int8": lambda: ours(params, x, int8),
          "emu_fp32": lambda: ours(params, x, at_fp32),
      },
      repeats,
  )
  y32, y8 = fp32(params, x), ours(params, x, int8)
  labels = np.asarray(model.data.test.y)
  return {
      "ratio": paired_ratio(s["int8"], s["fp32"]),
      "ratio_quartiles": ratio_quartiles(s["int8"], s["fp32"]),
      "emulator_int8_ms": _ms(s["int8"]),
      "jit_fp32_ms": _ms(s["fp32"]),
      # The emulator with every op at fp32 runs the original products: what it costs over
      # plain jit is the traced-mode machinery alone (conditionals, scale bookkeeping).
      "emulator_fp32_ms": _ms(s["emu_fp32"]),
      "emulator_fp32_over_jit_fp32": paired_ratio(s["emu_fp32"], s["fp32"]),
      "compile_s": {"jit_fp32": round(t_compile_fp32, 3), "emulator": round(t_compile_ours, 3)},
      "ops": len(emu.ops),
      "macs": int(sum(o.macs for o in emu.ops)),
      "int8_rel_diff_vs_fp32": _rel(y8, y32),
      "accuracy": {"fp32": _accuracy(y32, labels), "int8": _accuracy(y8, labels)},
      "_emu": emu,
      "_params": params,
      "_x": x,
  }


def bench_vmapped_over_loop(
    emu: aprec.Emulator, params: Any, x: jax.Array, repeats: int, device: jax.Device, seed: int
) -> dict[str, Any]:
  rng = np.random.default_rng(seed)
  table = rng.integers(0, len(aprec.MODES), (N_VMAPPED, len(emu.ops))).astype(np.int32)
  batch = jax.device_put(table, device)
  rows = [jax.device_put(r, device) for r in table]
  single = jax.jit(emu)
  vmapped = jax.jit(jax.vmap(emu, in_axes=(None, None, 0)))
  t_compile_single = _time_once(lambda: single(params, x, rows[0]))
  t_compile_vmapped = _time_once(lambda: vmapped(params, x, batch))

  sweep = lambda: emu.sweep(params, x, table, devices=[device])
  t_compile_sweep = _time_once(sweep)

  def loop():
    return [single(params, x, r) for r in rows]

  s = interleaved(
      {"vmapped": lambda: vmapped(params, x, batch), "sweep": sweep, "loop": loop},
      repeats,
      inner={"vmapped": 1, "sweep": 1, "loop": 1},
  )
  out_v = vmapped(params, x, batch)
  out_s = sweep()
  out_l = jnp.stack(loop())
  # Why vmapped may be slow: a batched mode index turns every lax.switch / lax.cond into
  # select_n over all branches, so every mode's quantizer and both products run.
  structure = {
      "single": jaxpr_stats(emu, params, x, rows[0]),
      "vmapped": jaxpr_stats(jax.vmap(emu, in_axes=(None, None, 0)), params, x, batch),
  }
  return {
      "ratio": paired_ratio(s["vmapped"], s["loop"]),
      "ratio_quartiles": ratio_quartiles(s["vmapped"], s["loop"]),
      "sweep_ratio": paired_ratio(s["sweep"], s["loop"]),
      "sweep_ratio_quartiles": ratio_quartiles(s["sweep"], s["loop"]),
      "vmapped_ms": _ms(s["vmapped"]),
      "sweep_ms": _ms(s["sweep"]),
      "loop_ms": _ms(s["loop"]),
      "max_abs_diff_sweep_vs_loop": float(jnp.max(jnp.abs(out_s - out_l))),
      "n_assignments": N_VMAPPED,
      "repeats": repeats,
      "compile_s": {
          "single": round(t_compile_single, 3),
          "vmapped": round(t_compile_vmapped, 3),
          "sweep": round(t_compile_sweep, 3),
      },
      "max_abs_diff_vmapped_vs_loop": float(jnp.max(jnp.abs(out_v - out_l))),
      "single_jit_cache_size_after_32_assignments": single._cache_size(),
      "jaxpr_primitive_counts": structure,
  }


def bench_ours_over_qwix(
    model: models.LoadedModel, emu: aprec.Emulator, params: Any, x: jax.Array, repeats: int
) -> dict[str, Any]:
  ours = jax.jit(emu)
  int8 = jax.device_put(emu.assignment("int8"), x.device)
  fp32 = jax.jit(model.apply_fn)
  q_matched, q_default = qwix_int8_cnn(matched=True), qwix_int8_cnn(matched=False)
  t_compile = {
      "qwix_matched": round(_time_once(lambda: q_matched(params, x)), 3),
      "qwix_default": round(_time_once(lambda: q_default(params, x)), 3),
  }
  jax.block_until_ready(ours(params, x, int8))
  s = interleaved(
      {
          "ours": lambda: ours(params, x, int8),
          "qwix_matched": lambda: q_matched(params, x),
          "qwix_default": lambda: q_default(params, x),
          "fp32": lambda: fp32(params, x),
      },
      repeats,
  )
  y_ours, y_m, y_d, y32 = (
      ours(params, x, int8),
      q_matched(params, x),
      q_default(params, x),
      fp32(params, x),
  )
  labels = np.asarray(model.data.test.y)
  args = (params, x)
  # One layer at int8, the rest fp32: the same arithmetic on both sides, so differences are
  # rounding ties (x / scale landing on .5, decided differently because qwix computes the
  # scale as absmax * c / 127.5, we as amax * (1 / 127)); in the full model they compound.
  per_layer = {}
  for layer in emu.op_names:
    modes = jax.device_put(emu.assignment(f"fp32,{layer}=int8"), x.device)
    y_layer = qwix_int8_cnn(matched=True, module_path=re.escape(layer))(params, x)
    per_layer[layer] = _rel(ours(params, x, modes), y_layer)
  return {
      "ratio": paired_ratio(s["ours"], s["qwix_matched"]),
      "ratio_quartiles": ratio_quartiles(s["ours"], s["qwix_matched"]),
      "ratio_default": paired_ratio(s["ours"], s["qwix_default"]),
      "ours_int8_ms": _ms(s["ours"]),
      "qwix_matched_ms": _ms(s["qwix_matched"]),
      "qwix_default_ms": _ms(s["qwix_default"]),
      "jit_fp32_ms": _ms(s["fp32"]),
      "ours_int8_over_fp32": paired_ratio(s["ours"], s["fp32"]),
      "qwix_matched_int8_over_fp32": paired_ratio(s["qwix_matched"], s["fp32"]),
      "compile_s": t_compile,
      "rel_diff": {
          "ours_vs_qwix_matched": _rel(y_ours, y_m),
          "ours_vs_qwix_default": _rel(y_ours, y_d),
          "ours_vs_fp32": _rel(y_ours, y32),
          "qwix_matched_vs_fp32": _rel(y_m, y32),
          "qwix_default_vs_fp32": _rel(y_d, y32),
      },
      "rel_diff_ours_vs_qwix_matched_one_layer_at_int8": per_layer,
      "max_abs_diff_ours_vs_qwix_matched": float(jnp.max(jnp.abs(y_ours - y_m))),
      "argmax_agreement_ours_vs_qwix_matched": float(
          np.mean(np.argmax(np.asarray(y_ours), -1) == np.argmax(np.asarray(y_m), -1))
      ),
      "accuracy": {
          "fp32": _accuracy(y32, labels),
          "ours_int8": _accuracy(y_ours, labels),
          "qwix_matched": _accuracy(y_m, labels),
          "qwix_default": _accuracy(y_d, labels),
      },
      "qwix_granularity": QWIX_GRANULARITY,
      "hlo": {
          "ours_int8": hlo_stats(emu, params, x, int8),
          "qwix_matched": hlo_stats(q_matched, *args),
          "jit_fp32": hlo_stats(model.apply_fn, *args),
      },
  }


def _switch_schedule(rng: np.random.Generator) -> list[int]:
  """``N_SWITCHES`` indices into the distinct assignments, each different from the last."""
  schedule = [int(rng.integers(N_DISTINCT))]
  while len(schedule) < N_SWITCHES:
    i = int(rng.integers(N_DISTINCT))
    if i != schedule[-1]:
      schedule.append(i)
  return schedule


def bench_switches(
    model: models.LoadedModel, params: Any, x: jax.Array, seed: int
) -> dict[str, Any]:
  rng = np.random.default_rng(seed)
  emu = aprec.Emulator(model.apply_fn, params, x)  # a fresh emulator: starts cold
  layers = list(emu.op_names)
  distinct: list[tuple[str, ...]] = []
  while len(distinct) < N_DISTINCT:
    a = tuple(SWITCH_MODES[i] for i in rng.integers(0, len(SWITCH_MODES), len(layers)))
    if a not in distinct:
      distinct.append(a)
  schedule = _switch_schedule(rng)
  ours_modes = [jax.device_put(emu.assignment(dict(zip(layers, a))), x.device) for a in distinct]

  f = jax.jit(emu)
  with CompileCounter() as ours_compiles:
    t = time.perf_counter()
    for i in schedule:
      jax.block_until_ready(f(params, x, ours_modes[i]))
    ours_wall = time.perf_counter() - t
  # 100 more switches among fully random assignments (all seven modes, int4 included).
  random_modes = [
      jax.device_put(a, x.device)
      for a in rng.integers(0, len(aprec.MODES), (N_SWITCHES, len(layers))).astype(np.int32)
  ]
  with CompileCounter() as ours_random_compiles:
    t = time.perf_counter()
    for m in random_modes:
      jax.block_until_ready(f(params, x, m))
    ours_random_wall = time.perf_counter() - t

  cache: dict[int, Callable] = {}
  with CompileCounter() as qwix_compiles:
    t = time.perf_counter()
    for i in schedule:
      if i not in cache:
        cache[i] = qwix_per_layer_cnn(dict(zip(layers, distinct[i])))
      jax.block_until_ready(cache[i](params, x))
    qwix_wall = time.perf_counter() - t
  # Rebuilding a model for an assignment already seen: does jit reuse the executable?
  with CompileCounter() as rebuild_compiles:
    t = time.perf_counter()
    jax.block_until_ready(qwix_per_layer_cnn(dict(zip(layers, distinct[schedule[0]])))(params, x))
    rebuild_s = time.perf_counter() - t

  return {
      "compiles": ours_compiles.count,
      "jit_cache_size": f._cache_size(),
      "wall_s": round(ours_wall, 3),
      "random_all_modes": {
          "extra_compiles": ours_random_compiles.count,
          "jit_cache_size": f._cache_size(),
          "wall_s": round(ours_random_wall, 3),
      },
      "qwix_compiles": qwix_compiles.count,
      "qwix_distinct_jitted_models": len(cache),
      "qwix_jit_cache_sizes_sum": sum(g._cache_size() for g in cache.values()),
      "qwix_wall_s": round(qwix_wall, 3),
      "qwix_rebuild_same_assignment": {
          "compiles": rebuild_compiles.count,
          "wall_s": round(rebuild_s, 3),
      },
      "n_switches": N_SWITCHES,
      "n_distinct_assignments": N_DISTINCT,
      "per_layer_modes": list(SWITCH_MODES),
      "layers": layers,
      "distinct_assignments": [list(a) for a in distinct],
      "method": "compiles = XLA backend compilations counted with jax.monitoring "
      f"({_BACKEND_COMPILE_EVENT}) during the 100 switches, starting cold; qwix "
      "models are cached per distinct assignment (its best case)",
  }


def bench_unjitted(
    model: models.LoadedModel, device: jax.Device, repeats: int, seed: int
) -> dict[str, Any]:
  """``emu(...)`` called without ``jax.jit``: compilations over 30 random switches of a fresh
  emulator, and its per-call time against ``jax.jit(emu)``."""
  params = jax.device_put(model.params, device)
  x = jax.device_put(jnp.asarray(model.data.test.x), device)
  emu = aprec.Emulator(model.apply_fn, params, x)  # a fresh emulator: starts cold
  rng = np.random.default_rng(seed)
  table = rng.integers(0, len(aprec.MODES), (N_UNJITTED_SWITCHES, len(emu.ops)))
  assignments = [jax.device_put(jnp.asarray(m, jnp.int32), device) for m in table]
  with CompileCounter() as compiles:
    t = time.perf_counter()
    for m in assignments:
      jax.block_until_ready(emu(params, x, m))
    wall = time.perf_counter() - t
  jitted = jax.jit(emu)
  jax.block_until_ready(jitted(params, x, assignments[0]))
  cycle = {"i": 0}

  def next_modes() -> jax.Array:  # every sample switches assignment, as a user would
    cycle["i"] = (cycle["i"] + 1) % len(assignments)
    return assignments[cycle["i"]]

  s = interleaved(
      {
          "unjitted": lambda: emu(params, x, next_modes()),
          "jitted": lambda: jitted(params, x, next_modes()),
      },
      repeats,
  )
  return {
      "compiles": compiles.count,
      "wall_s": round(wall, 3),
      "ratio": paired_ratio(s["unjitted"], s["jitted"]),
      "ratio_quartiles": ratio_quartiles(s["unjitted"], s["jitted"]),
      "unjitted_ms": _ms(s["unjitted"]),
      "jitted_ms": _ms(s["jitted"]),
      "n_switches": N_UNJITTED_SWITCHES,
      "method": "a fresh Emulator called as emu(params, x, modes) with 30 random "
      "assignments (all seven modes); compiles = XLA backend compilations "
      f"({_BACKEND_COMPILE_EVENT}); the ratio is the median paired per-call time "
      "of emu(...) over jax.jit(emu)(...), switching assignment every call",
  }


def run_unjitted(
    device: jax.Device, args: argparse.Namespace, cnn: models.LoadedModel, console: Console
) -> tuple[dict[str, float], dict[str, Any]]:
  """The compiled-by-default call (issue 8.5): its ratios and details."""
  console.log(f"[{device.platform}] (e) un-jitted emu(...): digits_cnn")
  e = bench_unjitted(cnn, device, args.repeats, args.seed)
  ratios = {
      "compiles_per_30_switches_unjitted": float(e["compiles"]),
      "unjitted_over_jitted": e["ratio"],
  }
  return ratios, {"unjitted": {"digits_cnn": e}}


def print_unjitted(console: Console, run: dict[str, Any]) -> None:
  r, e = run["ratios"], run["details"]["unjitted"]["digits_cnn"]
  console.print(
      f"un-jitted emu(...), digits_cnn: compiles_per_30_switches_unjitted = "
      f"{_fmt(r['compiles_per_30_switches_unjitted'])} (target <= 1; {e['wall_s']:.2f} s for "
      f"the 30 calls), unjitted_over_jitted = {r['unjitted_over_jitted']:.3f} "
      f"({e['unjitted_ms']:.2f} ms / {e['jitted_ms']:.2f} ms; target <= 2)"
  )


# --------------------------------------------------------------------------------------
# Layers under scan: a transformer stacked with nn.scan.

SCAN_DEPTHS = (8, 32)
N_SCAN_SWITCHES = 30


class _ScanBlock(nn.Module):
  """A pre-LN transformer block (attention, then MLP), shaped for ``nn.scan``."""

  d_model: int
  n_heads: int
  d_mlp: int

  @nn.compact
  def __call__(self, x: jax.Array, _: None) -> tuple[jax.Array, None]:
    h = nn.LayerNorm(name="ln_attn")(x)
    x = x + nn.MultiHeadDotProductAttention(self.n_heads, name="attn")(h, h)
    h = nn.Dense(self.d_mlp, name="mlp_in")(nn.LayerNorm(name="ln_mlp")(x))
    return x + nn.Dense(self.d_model, name="mlp_out")(nn.gelu(h)), None


class ScanTransformer(nn.Module):
  """``n_layers`` transformer blocks with stacked weights: one loop body, any depth."""

  n_layers: int
  d_model: int = 128
  n_heads: int = 4
  d_mlp: int = 512
  n_classes: int = 10

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Dense(self.d_model, name="embed")(x)
    stack = nn.scan(
        _ScanBlock, variable_axes={"params": 0}, split_rngs={"params": True}, length=self.n_layers
    )
    x, _ = stack(self.d_model, self.n_heads, self.d_mlp, name="layers")(x, None)
    return nn.Dense(self.n_classes, name="head")(nn.LayerNorm(name="ln_out")(x).mean(1))


def _scan_model(n_layers: int, device: jax.Device) -> tuple[Callable, Any, jax.Array]:
  x = jax.device_put(jax.random.normal(jax.random.key(0), (8, 32, 32)), device)
  model = ScanTransformer(n_layers)
  params = jax.device_put(model.init(jax.random.key(1), x), device)
  return model.apply, params, x


def _compile_s(apply_fn: Callable, params: Any, x: jax.Array, modes: np.ndarray) -> float:
  """Trace + lower + compile of ``jax.jit(emulator)`` for a freshly built emulator."""
  emu = aprec.Emulator(apply_fn, params, x)
  t = time.perf_counter()
  jax.jit(emu).lower(params, x, jax.device_put(modes, x.device)).compile()
  return time.perf_counter() - t


def bench_scan(repeats: int, device: jax.Device, seed: int) -> dict[str, Any]:
  """The three ``*_scan`` figures for the nn.scan transformer (see the module docstring)."""
  apply_fn, params, x = _scan_model(SCAN_DEPTHS[0], device)
  emu = aprec.Emulator(apply_fn, params, x)
  fp32, ours = jax.jit(apply_fn), jax.jit(emu)
  int8 = jax.device_put(emu.assignment("int8"), device)
  at_fp32 = jax.device_put(emu.assignment("fp32"), device)
  jax.block_until_ready((fp32(params, x), ours(params, x, int8)))
  s = interleaved(
      {
          "fp32": lambda: fp32(params, x),
          "int8": lambda: ours(params, x, int8),
          "emu_fp32": lambda: ours(params, x, at_fp32),
      },
      repeats,
  )
  fp32_rel = _rel(ours(params, x, at_fp32), fp32(params, x))

  rng = np.random.default_rng(seed)
  switches = [
      jax.device_put(m, device)
      for m in rng.integers(0, len(aprec.MODES), (N_SCAN_SWITCHES, len(emu.ops))).astype(np.int32)
  ]
  fresh = jax.jit(aprec.Emulator(apply_fn, params, x))  # starts cold
  with CompileCounter() as compiles:
    t = time.perf_counter()
    for modes in switches:
      jax.block_until_ready(fresh(params, x, modes))
    switch_wall = time.perf_counter() - t

  compile_s: dict[str, float] = {}
  n_ops: dict[str, int] = {}
  for depth in SCAN_DEPTHS:
    deep = _scan_model(depth, device)
    n_ops[str(depth)] = len(aprec.Emulator(*deep).ops)
    modes = np.full(n_ops[str(depth)], aprec.mode_index("int8"), np.int32)
    compile_s[str(depth)] = min(_compile_s(*deep, modes) for _ in range(2))
  shallow, deep_ = (str(d) for d in SCAN_DEPTHS)
  return {
      "int8_over_fp32": paired_ratio(s["int8"], s["fp32"]),
      "int8_over_fp32_quartiles": ratio_quartiles(s["int8"], s["fp32"]),
      "emulator_int8_ms": _ms(s["int8"]),
      "jit_fp32_ms": _ms(s["fp32"]),
      "emulator_fp32_ms": _ms(s["emu_fp32"]),
      "emulator_fp32_over_jit_fp32": paired_ratio(s["emu_fp32"], s["fp32"]),
      "emulator_fp32_max_rel_diff_vs_jit_fp32": fp32_rel,
      "compiles_per_30_switches": compiles.count,
      "switches_wall_s": round(switch_wall, 3),
      "jit_cache_size": fresh._cache_size(),
      "compile_s": {k: round(v, 3) for k, v in compile_s.items()},
      "compile_32_over_8": compile_s[deep_] / compile_s[shallow],
      "ops": n_ops,
      "layers_timed": SCAN_DEPTHS[0],
      "model": "ScanTransformer: nn.scan over pre-LN blocks, d_model 128, 4 heads, MLP 512, "
      "input (8, 32, 32)",
  }


def run_scan(device: jax.Device, args: argparse.Namespace, console: Console) -> dict[str, Any]:
  """The scan benchmark on one device; returns its ratios and details."""
  console.log(f"[{device.platform}] scan-stacked transformer")
  with jax.default_device(device):
    d = bench_scan(args.repeats, device, args.seed)
  d.update(platform=device.platform, device_kind=device.device_kind)
  ratios = {
      "int8_over_fp32_scan": d["int8_over_fp32"],
      "compiles_per_30_switches_scan": float(d["compiles_per_30_switches"]),
      "compile_32_over_8_scan": d["compile_32_over_8"],
  }
  return {"ratios": ratios, "details": {"scan": {"scan_transformer": d}}}


def print_scan_table(
    console: Console, platform: str, ratios: dict[str, float], d: dict[str, Any]
) -> None:
  table = Table(title=f"aprec emulator benchmark, layers under scan — {platform}")
  for col in ("ratio", "ours", "baseline", "value", "target", "met"):
    table.add_column(col, justify="right" if col in ("value", "target") else "left")
  cells = {
      "int8_over_fp32_scan": (
          f"{d['emulator_int8_ms']:.2f} ms int8",
          f"{d['jit_fp32_ms']:.2f} ms jit fp32",
      ),
      "compiles_per_30_switches_scan": (
          f"{d['switches_wall_s']:.2f} s wall",
          f"jit cache {d['jit_cache_size']}",
      ),
      "compile_32_over_8_scan": (
          f"{d['compile_s'][str(SCAN_DEPTHS[1])]:.2f} s at 32",
          f"{d['compile_s'][str(SCAN_DEPTHS[0])]:.2f} s at 8",
      ),
  }
  for key, (ours, base) in cells.items():
    op, limit = TARGETS[key]
    met = "[green]yes[/]" if ratios[key] <= limit else "[red]no[/]"
    table.add_row(key, ours, base, _fmt(ratios[key]), f"{op} {_fmt(limit)}", met)
  console.print(table)


def main_scan_only(args: argparse.Namespace, devices: list[jax.Device], console: Console) -> int:
  """``--only scan``: run the scan benchmark and update its keys in ``args.out``."""
  result = json.loads(args.out.read_text()) if args.out.exists() else {"ratios": {}, "runs": []}
  for i, device in enumerate(devices):
    run = run_scan(device, args, console)
    print_scan_table(
        console, device.platform, run["ratios"], run["details"]["scan"]["scan_transformer"]
    )
    if i == 0:
      result["ratios"].update(run["ratios"])
    runs = [r for r in result.get("runs", []) if r.get("platform") == device.platform]
    if runs:
      runs[0].setdefault("ratios", {}).update(run["ratios"])
      runs[0].setdefault("details", {}).update(run["details"])
    else:
      result.setdefault("runs", []).append(
          {"platform": device.platform, "device_kind": device.device_kind, **run}
      )
  result["targets"] = {k: f"{op} {v}" for k, (op, v) in TARGETS.items()}
  result["met"] = {
      k: result["ratios"][k] <= v for k, (_, v) in TARGETS.items() if k in result["ratios"]
  }
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
  console.print(f"updated the scan keys of {args.out}")
  return 0


# --------------------------------------------------------------------------------------


def run_device(
    device: jax.Device,
    args: argparse.Namespace,
    cnn: models.LoadedModel,
    vit: models.LoadedModel,
    console: Console,
) -> dict[str, Any]:
  """All benchmarks on one device; returns ``{"ratios": ..., "details": ...}``."""
  where = {"platform": device.platform, "device_kind": device.device_kind}
  details: dict[str, Any] = {}
  ratios: dict[str, float] = {}
  with jax.default_device(device):
    console.log(f"[{device.platform}] (a) int8 over fp32: digits_cnn")
    a_cnn = bench_int8_over_fp32(cnn, args.repeats, device)
    emu_cnn, params_cnn, x = a_cnn.pop("_emu"), a_cnn.pop("_params"), a_cnn.pop("_x")
    console.log(f"[{device.platform}] (a) int8 over fp32: digits_vit")
    a_vit = bench_int8_over_fp32(vit, args.repeats, device)
    emu_vit, params_vit, x_vit = a_vit.pop("_emu"), a_vit.pop("_params"), a_vit.pop("_x")
    ratios["int8_over_fp32"] = a_cnn["ratio"]
    ratios["int8_over_fp32_vit"] = a_vit["ratio"]
    details["int8_over_fp32"] = {"digits_cnn": a_cnn, "digits_vit": a_vit}

    console.log(f"[{device.platform}] (c) ours over qwix")
    c = bench_ours_over_qwix(cnn, emu_cnn, params_cnn, x, args.repeats)
    ratios["ours_over_qwix"] = c["ratio"]
    ratios["ours_over_qwix_default"] = c["ratio_default"]
    details["ours_over_qwix"] = {"digits_cnn": c}

    console.log(f"[{device.platform}] (d) compilations per 100 switches")
    d = bench_switches(cnn, params_cnn, x, args.seed)
    ratios["compiles_per_100_switches"] = float(d["compiles"])
    ratios["qwix_compiles_per_100_switches"] = float(d["qwix_compiles"])
    ratios["switch_wall_ours_over_qwix"] = d["wall_s"] / d["qwix_wall_s"]
    details["compiles_per_100_switches"] = {"digits_cnn": d}

    console.log(f"[{device.platform}] (b) vmapped over loop: digits_cnn")
    b_cnn = bench_vmapped_over_loop(emu_cnn, params_cnn, x, args.vmap_repeats, device, args.seed)
    ratios["vmapped_over_loop"] = b_cnn["ratio"]
    ratios["sweep_over_loop"] = b_cnn["sweep_ratio"]
    details["vmapped_over_loop"] = {"digits_cnn": b_cnn}
    if not args.skip_vit_vmap:
      console.log(f"[{device.platform}] (b) vmapped over loop: digits_vit")
      b_vit = bench_vmapped_over_loop(
          emu_vit, params_vit, x_vit, args.vmap_repeats, device, args.seed
      )
      ratios["vmapped_over_loop_vit"] = b_vit["ratio"]
      ratios["sweep_over_loop_vit"] = b_vit["sweep_ratio"]
      details["vmapped_over_loop"]["digits_vit"] = b_vit
    export_ratios, details["export"] = run_export(device, args, (cnn, vit), console)
    ratios.update(export_ratios)
    e_ratios, e_details = run_unjitted(device, args, cnn, console)
    ratios.update(e_ratios)
    details.update(e_details)
  for group in details.values():
    for entry in group.values():
      entry.update(where)
  scan = run_scan(device, args, console)
  ratios.update(scan["ratios"])
  details.update(scan["details"])
  return {**where, "ratios": ratios, "details": details}


def _fmt(v: float) -> str:
  return f"{v:.0f}" if float(v).is_integer() and abs(v) >= 1 else f"{v:.3f}"


def bench_export(model: models.LoadedModel, repeats: int, device: jax.Device) -> dict[str, Any]:
  """The exported artifact against ``jax.jit(emulator)`` at one mixed assignment."""
  import tempfile

  import aprec.export

  params = jax.device_put(model.params, device)
  x = jax.device_put(jnp.asarray(model.data.test.x), device)
  emu = aprec.Emulator(model.apply_fn, params, x)
  modes = jax.device_put(emu.assignment(EXPORT_ASSIGNMENTS[model.name]), device)
  with tempfile.TemporaryDirectory() as tmp:
    t = time.perf_counter()
    summary = aprec.export.export(emu, params, modes, pathlib.Path(tmp) / "artifact")
    export_s = time.perf_counter() - t
    artifact = aprec.export.load(summary.directory)
  emulator = jax.jit(emu)
  compile_s = {
      "emulator": round(_time_once(lambda: emulator(params, x, modes)), 3),
      "artifact": round(_time_once(lambda: artifact(x)), 3),
  }
  s = interleaved(
      {"artifact": lambda: artifact(x), "emulator": lambda: emulator(params, x, modes)}, repeats
  )
  y_art = np.asarray(artifact(x))
  y_emu = np.asarray(emulator(params, x, modes))
  labels = np.asarray(model.data.test.y)
  return {
      "ratio": paired_ratio(s["artifact"], s["emulator"]),
      "ratio_quartiles": ratio_quartiles(s["artifact"], s["emulator"]),
      "artifact_ms": _ms(s["artifact"]),
      "emulator_ms": _ms(s["emulator"]),
      "bytes_over_fp32": summary.bytes_over_fp32,
      "array_bytes": summary.array_bytes,
      "fp32_param_bytes": summary.fp32_param_bytes,
      "program_bytes": summary.program_bytes,
      "assignment": summary.assignment,
      "export_s": round(export_s, 3),
      "compile_s": compile_s,
      "max_abs_diff": float(np.abs(y_art - y_emu).max()),
      "max_abs_output": float(np.abs(y_emu).max()),
      "top1_agreement": float(np.mean(y_art.argmax(-1) == y_emu.argmax(-1))),
      "accuracy": {"artifact": _accuracy(y_art, labels), "emulator": _accuracy(y_emu, labels)},
  }


def run_export(
    device: jax.Device,
    args: argparse.Namespace,
    loaded: Sequence[models.LoadedModel],
    console: Console,
) -> tuple[dict[str, float], dict[str, Any]]:
  """``export_over_emulator`` and ``export_bytes_over_fp32`` (``_vit``) on one device."""
  ratios, details = {}, {}
  with jax.default_device(device):
    for model in loaded:
      console.log(f"[{device.platform}] (e) export over emulator: {model.name}")
      e = bench_export(model, args.repeats, device)
      suffix = "" if model.name == "digits_cnn" else "_vit"
      ratios[f"export_over_emulator{suffix}"] = e["ratio"]
      ratios[f"export_bytes_over_fp32{suffix}"] = e["bytes_over_fp32"]
      details[model.name] = {**e, "platform": device.platform, "device_kind": device.device_kind}
  return ratios, details


def print_export_table(
    console: Console, ratios: dict[str, float], details: dict[str, Any], platform: str
) -> None:
  table = Table(title=f"aprec export benchmark — {platform}")
  for col in (
      "model",
      "artifact",
      "emulator",
      "export_over_emulator",
      "bytes_over_fp32",
      "max |Δ|",
      "top-1 agreement",
  ):
    table.add_column(col)
  for name, e in details.items():
    table.add_row(
        name,
        f"{e['artifact_ms']:.2f} ms",
        f"{e['emulator_ms']:.2f} ms",
        _fmt(e["ratio"]),
        _fmt(e["bytes_over_fp32"]),
        f"{e['max_abs_diff']:.2e}",
        f"{e['top1_agreement']:.4f}",
    )
  console.print(table)


def print_table(console: Console, run: dict[str, Any]) -> None:
  r, d = run["ratios"], run["details"]
  a, c = d["int8_over_fp32"], d["ours_over_qwix"]["digits_cnn"]
  sw, b = d["compiles_per_100_switches"]["digits_cnn"], d["vmapped_over_loop"]
  table = Table(title=f"aprec emulator benchmark — {run['platform']} ({run['device_kind']})")
  for col in ("ratio", "model", "ours", "baseline", "value", "target", "met"):
    table.add_column(col, justify="right" if col in ("value", "target") else "left")

  def row(key: str, model: str, ours: str, base: str) -> None:
    value = r[key]
    op, limit = TARGETS.get(key, ("", None))
    met = "" if limit is None else ("[green]yes[/]" if value <= limit else "[red]no[/]")
    table.add_row(
        key, model, ours, base, _fmt(value), "" if limit is None else f"{op} {_fmt(limit)}", met
    )

  for key, name in (("int8_over_fp32", "digits_cnn"), ("int8_over_fp32_vit", "digits_vit")):
    row(
        key,
        name,
        f"{a[name]['emulator_int8_ms']:.2f} ms int8",
        f"{a[name]['jit_fp32_ms']:.2f} ms jit fp32",
    )
  for key, name in (("vmapped_over_loop", "digits_cnn"), ("vmapped_over_loop_vit", "digits_vit")):
    if key in r:
      row(
          key,
          name,
          f"{b[name]['vmapped_ms']:.1f} ms vmap x{N_VMAPPED}",
          f"{b[name]['loop_ms']:.1f} ms {N_VMAPPED} calls",
      )
      sweep_key = key.replace("vmapped", "sweep")
      row(
          sweep_key,
          name,
          f"{b[name]['sweep_ms']:.1f} ms emu.sweep x{N_VMAPPED}",
          f"{b[name]['loop_ms']:.1f} ms {N_VMAPPED} calls",
      )
  row(
      "ours_over_qwix",
      "digits_cnn",
      f"{c['ours_int8_ms']:.2f} ms",
      f"{c['qwix_matched_ms']:.2f} ms qwix (matched)",
  )
  row(
      "ours_over_qwix_default",
      "digits_cnn",
      f"{c['ours_int8_ms']:.2f} ms",
      f"{c['qwix_default_ms']:.2f} ms qwix (default)",
  )
  row(
      "compiles_per_100_switches",
      "digits_cnn",
      f"{sw['wall_s']:.2f} s wall",
      f"jit cache {sw['jit_cache_size']}",
  )
  row(
      "qwix_compiles_per_100_switches",
      "digits_cnn",
      f"{sw['qwix_wall_s']:.2f} s wall",
      f"{sw['qwix_distinct_jitted_models']} models",
  )
  row(
      "switch_wall_ours_over_qwix",
      "digits_cnn",
      f"{sw['wall_s']:.2f} s",
      f"{sw['qwix_wall_s']:.2f} s",
  )
  console.print(table)
  print_export_table(console, r, d["export"], run["platform"])
  if "int8_over_fp32_scan" in r:
    print_scan_table(console, run["platform"], r, d["scan"]["scan_transformer"])
  rel = c["rel_diff"]
  console.print(
      f"logit rel. diff (digits_cnn int8): ours vs qwix matched {rel['ours_vs_qwix_matched']:.2e}, "
      f"vs qwix default {rel['ours_vs_qwix_default']:.2e}; vs fp32: ours "
      f"{rel['ours_vs_fp32']:.2e}, qwix matched {rel['qwix_matched_vs_fp32']:.2e}, "
      f"qwix default {rel['qwix_default_vs_fp32']:.2e}; accuracy {c['accuracy']}"
  )


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument(
      "--repeats", type=int, default=30, help="timed samples per side of the fast ratios (a, c)"
  )
  parser.add_argument(
      "--vmap-repeats",
      type=int,
      default=3,
      help="timed samples per side of vmapped_over_loop (slow on CPU)",
  )
  parser.add_argument(
      "--out", type=pathlib.Path, default=_REPO / "runs" / "bench" / "emulator.json"
  )
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
      "--wait", type=float, default=3600.0, help="seconds to poll for missing checkpoints"
  )
  parser.add_argument(
      "--untrained",
      action="store_true",
      help="use freshly initialised parameters instead of checkpoints",
  )
  parser.add_argument(
      "--skip-vit-vmap", action="store_true", help="skip vmapped_over_loop_vit (saves ~30 s on CPU)"
  )
  parser.add_argument("--cpu-only", action="store_true", help="skip the accelerator run")
  parser.add_argument(
      "--only",
      choices=("all", "export", "scan", "minilm"),
      default="all",
      help="run one part and merge its ratios into an existing --out JSON",
  )
  args = parser.parse_args(argv)
  console = Console()
  if not console.is_terminal:
    console = Console(width=150)
  start = time.perf_counter()
  if args.only == "scan":
    devices = [jax.devices("cpu")[0]]
    if jax.default_backend() != "cpu" and not args.cpu_only:
      devices.append(jax.devices()[0])
    return main_scan_only(args, devices, console)

  if args.only == "minilm":
    return main_minilm(args, console)
  cnn = load_model("digits_cnn", wait_s=args.wait, untrained=args.untrained)
  vit = load_model("digits_vit", wait_s=args.wait, untrained=args.untrained)
  devices = [jax.devices("cpu")[0]]
  if jax.default_backend() != "cpu" and not args.cpu_only:
    devices.append(jax.devices()[0])

  if args.only == "export":
    return main_export(args, devices, (cnn, vit), console)
  runs = []
  for device in devices:
    run = run_device(device, args, cnn, vit, console)
    print_table(console, run)
    print_unjitted(console, run)
    runs.append(run)

  cpu = runs[0]
  result = {
      "ratios": cpu["ratios"],
      "ratios_platform": {"platform": cpu["platform"], "device_kind": cpu["device_kind"]},
      "targets": {k: f"{op} {v}" for k, (op, v) in TARGETS.items()},
      "met": {k: cpu["ratios"][k] <= v for k, (_, v) in TARGETS.items() if k in cpu["ratios"]},
      "runs": runs,
      "setup": {
          "batch": list(np.shape(cnn.data.test.x)),
          "repeats": args.repeats,
          "vmap_repeats": args.vmap_repeats,
          "seed": args.seed,
          "trained_checkpoints": not args.untrained,
          "jax_devices": [f"{d.platform}:{d.device_kind}" for d in jax.devices()],
          "cpu_count": os.cpu_count(),
          "machine": platform_lib.machine(),
          "versions": {
              p: importlib.metadata.version(p) for p in ("jax", "jaxlib", "flax", "qwix", "numpy")
          },
          "wall_s": round(time.perf_counter() - start, 1),
      },
  }
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
  console.print(f"wrote {args.out} in {result['setup']['wall_s']} s")
  return main_minilm(args, console)


def main_minilm(args: argparse.Namespace, console: Console) -> int:
  """``--only minilm`` (and the end of ``all``): the peer comparison on all-MiniLM-L6-v2's
  real weights, ours at uniform int8 against qwix's int8 (``scripts/bench_minilm.py``:
  ``ours_over_qwix_minilm_l6`` and both outputs' 1 - cos to fp32), merged into ``args.out``."""
  import bench_minilm  # noqa: PLC0415 (a sibling script; loads the real model)

  result = json.loads(args.out.read_text()) if args.out.exists() else {}
  minilm = bench_minilm.measure(repeats=max(3, min(args.repeats, 7)))
  ratios = minilm["ratios"]
  result.setdefault("ratios", {}).update(ratios)
  result.setdefault("targets", {}).update(
      {k: f"{op} {v}" for k, (op, v) in TARGETS.items() if k in ratios}
  )
  result.setdefault("met", {}).update(
      {k: ratios[k] <= v for k, (_, v) in TARGETS.items() if k in ratios}
  )
  result["minilm"] = minilm
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
  console.print(f"merged the MiniLM-L6 ratios into {args.out}")
  return 0


def main_export(
    args: argparse.Namespace,
    devices: Sequence[jax.Device],
    loaded: Sequence[models.LoadedModel],
    console: Console,
) -> int:
  """``--only export``: the export ratios, merged into ``args.out`` (other keys kept)."""
  result = json.loads(args.out.read_text()) if args.out.exists() else {}
  per_device = []
  for device in devices:
    ratios, details = run_export(device, args, loaded, console)
    print_export_table(console, ratios, details, device.platform)
    per_device.append(
        {
            "platform": device.platform,
            "device_kind": device.device_kind,
            "ratios": ratios,
            "details": details,
        }
    )
  result.setdefault("ratios", {}).update(per_device[0]["ratios"])
  result.setdefault("targets", {}).update(
      {k: f"{op} {v}" for k, (op, v) in TARGETS.items() if k in per_device[0]["ratios"]}
  )
  result.setdefault("met", {}).update(
      {
          k: per_device[0]["ratios"][k] <= v
          for k, (_, v) in TARGETS.items()
          if k in per_device[0]["ratios"]
      }
  )
  result["export"] = {
      "runs": per_device,
      "repeats": args.repeats,
      "assignments": EXPORT_ASSIGNMENTS,
  }
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
  console.print(f"merged the export ratios into {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
