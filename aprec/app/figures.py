"""Every figure aprec draws (PNG, matplotlib's Agg canvas, no global pyplot state).

Sensitivity: ``heatmap`` of a profile, ``scatter`` of predicted vs measured Δloss,
``pareto`` (one budget kind) and ``pareto_fronts`` (several) of planned vs uniform
assignments. Runtime: ``sim_trace`` of a simulator run,
``power_vs_cap``, ``mode_heatmaps``, ``accuracy_vs_energy`` of closed-loop runs and
``training_curve`` of a policy. Demo: ``bar_chart``.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from aprec import checkpoint
from aprec.emulator.formats import MODES


def _figure(width: float, height: float, dpi: int = 100):
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(width, height), dpi=dpi)
  FigureCanvasAgg(fig)
  return fig


def _save(fig, path: str | pathlib.Path, **kwargs: Any) -> pathlib.Path:
  return checkpoint.replace_file(path, lambda tmp: fig.savefig(tmp, **kwargs))


def _floor(values: np.ndarray) -> float:
  positive = values[np.isfinite(values) & (values > 0)]
  return float(positive.min()) if positive.size else 1e-8


# --------------------------------------------------------------------------------------
# Sensitivity analysis.


def heatmap(profile, path: str | pathlib.Path, *, method: str | None = None) -> pathlib.Path:
  """Ops × modes heatmap of a profile's predicted Δloss (log colour; ≤ 0 drawn at the floor)."""
  from matplotlib.colors import LogNorm

  method = profile.method if method is None else method
  table = profile.table(method)
  floor = _floor(table)
  shown = np.where(np.isfinite(table) & (table > floor), table, floor)
  n_ops, n_modes = table.shape
  fig = _figure(1.1 * n_modes + 3, 0.32 * n_ops + 1.8, dpi=120)
  ax = fig.subplots()
  image = ax.imshow(
      shown,
      aspect="auto",
      cmap="magma_r",
      norm=LogNorm(vmin=floor, vmax=max(float(shown.max()), floor * 10)),
  )
  ax.set_xticks(range(n_modes), profile.modes, rotation=30, ha="right")
  ax.set_yticks(range(n_ops), profile.op_names, fontsize=7 if n_ops > 12 else 9)
  for i in range(n_ops):
    for j in range(n_modes):
      ax.text(
          j,
          i,
          f"{table[i, j]:.1e}",
          ha="center",
          va="center",
          fontsize=5.5,
          color="white" if shown[i, j] > np.sqrt(floor * shown.max()) else "black",
      )
  fig.colorbar(image, ax=ax, label="predicted Δloss")
  ax.set_title(f"{profile.model}: sensitivity ({method}, {profile.dataset})")
  fig.tight_layout()
  return _save(fig, path)


def scatter(
    validation, path: str | pathlib.Path, *, model: str = "", methods: Sequence[str] | None = None
) -> pathlib.Path:
  """Predicted vs measured Δloss: single-op pairs (left) and mixed assignments (right),
  one colour per method, log-log (non-positive values drawn at the floor)."""
  methods = list(validation.scores) if methods is None else list(methods)
  mask = validation.pair_mask
  fig = _figure(11, 4.6, dpi=120)
  axes = fig.subplots(1, 2)
  panels = [
      (
          axes[0],
          validation.measured_single[mask],
          {m: validation.predicted_single[m][mask] for m in methods},
          "spearman_single_op",
          f"single op ({', '.join(validation.pair_modes)})",
      ),
      (
          axes[1],
          validation.measured_additive,
          {m: validation.predicted_additive[m] for m in methods},
          "spearman_additive",
          f"{len(validation.assignments)} random mixed assignments (sum of per-op predictions)",
      ),
  ]
  for ax, measured, predicted, key, title in panels:
    xfloor = _floor(measured)
    for m, pred in predicted.items():
      s = validation.scores[m]
      extra = f", R²={s.r2_additive:.2f})" if key == "spearman_additive" else ")"
      ax.scatter(
          np.maximum(measured, xfloor),
          np.maximum(pred, _floor(pred)),
          s=10,
          alpha=0.7,
          label=f"{m} (ρ={getattr(s, key):.2f}" + extra,
      )
    hi = max(float(np.nanmax(measured)), xfloor * 10)
    ax.plot([xfloor, hi], [xfloor, hi], "k--", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"measured Δloss ({validation.dataset})")
    ax.set_ylabel("predicted Δloss")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
  fig.suptitle(f"{model}: sensitivity predictions vs held-out measurements")
  fig.tight_layout()
  return _save(fig, path)


_BUDGET_LABELS = {
    "bits": "average bits per weight",
    "weight_bytes": "weight bytes",
    "bops": "bit-operations per example",
    "energy_j": "energy per example (J, cost model)",
    "latency_s": "latency per example (s, cost model)",
}
_METRIC_LABELS = {"accuracy": "measured accuracy", "mrr": "measured MRR", "recall_at_1": "recall@1"}


def _front_panel(ax, points: Sequence, kind: str, metric: str) -> None:
  value = lambda p: p.measured_accuracy if metric == "accuracy" else p.metrics[metric]
  for group, style in (
      ("uniform", dict(marker="s", color="#C44E52", linestyle="none")),
      ("mixed", dict(marker="o", color="#4C72B0", linestyle="-")),
  ):
    pts = sorted((p for p in points if p.kind == group), key=lambda p: p.used)
    ax.plot([p.used for p in pts], [value(p) for p in pts], label=group, **style)
    if group == "uniform":
      for p in pts:
        ax.annotate(
            p.label, (p.used, value(p)), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
  ax.set_xscale("log", base=2 if kind == "bits" else 10)
  ax.set_xlabel(_BUDGET_LABELS.get(kind, kind))
  ax.set_ylabel(_METRIC_LABELS.get(metric, metric))
  ax.legend(fontsize=8)


def pareto(
    points: Sequence,
    path: str | pathlib.Path,
    *,
    kind: str = "bits",
    model: str = "",
    metric: str = "accuracy",
) -> pathlib.Path:
  """A measured metric (``accuracy``, or a ``FrontPoint.metrics`` key such as ``mrr``)
  against budget use: planned mixed plans beside uniform ones."""
  fig = _figure(6.4, 4.2, dpi=120)
  _front_panel(fig.subplots(), points, kind, metric)
  fig.axes[0].set_title(f"{model}: planned mixed precision vs uniform")
  fig.tight_layout()
  return _save(fig, path)


def pareto_fronts(
    fronts: Mapping[str, Sequence],
    path: str | pathlib.Path,
    *,
    model: str = "",
    metric: str = "accuracy",
) -> pathlib.Path:
  """``pareto`` side by side for several budget kinds (``{kind: points}``)."""
  fig = _figure(6.0 * len(fronts), 4.2, dpi=120)
  axes = np.atleast_1d(fig.subplots(1, len(fronts)))
  for ax, (kind, points) in zip(axes, fronts.items()):
    _front_panel(ax, points, kind, metric)
  fig.suptitle(f"{model}: planned mixed precision vs uniform modes")
  fig.tight_layout()
  return _save(fig, path)


# --------------------------------------------------------------------------------------
# The simulator and the closed loop.


def sim_trace(metrics, path: str | pathlib.Path, title: str | None = None) -> pathlib.Path:
  """A simulator run: power vs cap, buffer occupancy, PE availability, latency vs deadline,
  temperature (sensor readings as dots, ground truth as lines)."""
  import jax

  m = jax.tree.map(np.asarray, metrics)
  t = np.arange(m.latency_s.shape[0])
  fig = _figure(9, 10)
  fig.set_layout_engine("constrained")
  axes = fig.subplots(5, 1, sharex=True)
  panels = (
      ("power (W)", m.true_power_w, m.power_w, m.power_cap_w, "cap"),
      ("buffer occupancy", m.true_buffer_occupancy, m.buffer_occupancy, None, None),
      ("PE availability", m.true_pe_availability, m.pe_availability, None, None),
      ("latency (ms)", m.latency_s * 1e3, None, m.deadline_s * 1e3, "deadline"),
      ("temperature (C)", m.true_temperature_c, m.temperature_c, None, None),
  )
  for ax, (label, truth, sensor, limit, limit_label) in zip(axes, panels):
    ax.plot(t, truth, lw=1.2, label="true")
    if sensor is not None:
      ax.plot(t, sensor, ".", ms=2, alpha=0.6, label="sensor")
    if limit is not None:
      ax.plot(t, limit, "r--", lw=1, label=limit_label)
    ax.set_ylabel(label)
    ax.legend(loc="upper right", fontsize=7)
  axes[-1].set_xlabel("step")
  if title:
    fig.suptitle(title)
  return _save(fig, path)


def power_vs_cap(traces: Mapping, path: pathlib.Path, title: str = "") -> pathlib.Path:
  """One panel per policy: true power, sensor reading and the cap over steps."""
  fig = _figure(9, 1.8 * len(traces) + 0.6)
  fig.set_layout_engine("constrained")
  axes = np.atleast_1d(fig.subplots(len(traces), 1, sharex=True))
  for ax, (name, tr) in zip(axes, traces.items()):
    m = tr.metrics
    t = np.arange(len(np.asarray(m.power_w)))
    ax.plot(t, np.asarray(m.true_power_w), lw=1, label="power")
    ax.plot(t, np.asarray(m.power_cap_w), "r--", lw=1, label="cap")
    fb = np.asarray(tr.fallback)
    if fb.any():
      ax.plot(t[fb], np.asarray(m.true_power_w)[fb], "kx", ms=3, label="fallback")
    ax.set_ylabel(f"{name}\nW", fontsize=8)
    ax.legend(loc="upper right", fontsize=6)
  axes[-1].set_xlabel("step")
  fig.suptitle(title or "power vs cap")
  return _save(fig, path)


def mode_heatmaps(
    traces: Mapping, op_names: Sequence[str], path: pathlib.Path, title: str = ""
) -> pathlib.Path:
  """One heatmap per policy: op (rows) × step (columns), colour = mode."""
  fig = _figure(9, (0.25 * len(op_names) + 0.8) * len(traces) + 0.6)
  fig.set_layout_engine("constrained")
  axes = np.atleast_1d(fig.subplots(len(traces), 1, sharex=True))
  im = None
  for ax, (name, tr) in zip(axes, traces.items()):
    im = ax.imshow(
        np.asarray(tr.assignments).T,
        aspect="auto",
        interpolation="nearest",
        cmap="viridis",
        vmin=0,
        vmax=len(MODES) - 1,
    )
    ax.set_yticks(
        range(len(op_names)),
        op_names
        if len(op_names) <= 8
        else [n if i % 3 == 0 else "" for i, n in enumerate(op_names)],
        fontsize=6,
    )
    ax.set_title(name, fontsize=8)
  cbar = fig.colorbar(im, ax=list(axes), ticks=range(len(MODES)))
  cbar.ax.set_yticklabels(MODES, fontsize=7)
  axes[-1].set_xlabel("step")
  fig.suptitle(title or "mode of each op over time")
  return _save(fig, path)


def accuracy_vs_energy(
    rows: Sequence[dict], path: pathlib.Path, reference: float | None = None, title: str = ""
) -> pathlib.Path:
  """Scatter: measured accuracy against mean energy per inference, one point per policy."""
  fig = _figure(6, 4)
  fig.set_layout_engine("constrained")
  ax = fig.subplots()
  for r in rows:
    ax.scatter(r["energy_per_inference_j"] * 1e9, r["accuracy"] * 100)
    ax.annotate(
        r["policy"],
        (r["energy_per_inference_j"] * 1e9, r["accuracy"] * 100),
        fontsize=7,
        xytext=(3, 3),
        textcoords="offset points",
    )
  if reference is not None:
    ax.axhline(reference * 100, color="r", ls="--", lw=1, label="fp32")
    ax.legend(fontsize=7)
  ax.set_xlabel("energy per inference (nJ)")
  ax.set_ylabel("measured accuracy (%)")
  ax.set_title(title or "accuracy vs energy")
  return _save(fig, path)


def training_curve(history: Sequence[dict], path: pathlib.Path, title: str = "") -> pathlib.Path:
  """Objective, predicted Δloss, energy vs fp16 and violation rate over training steps."""
  fig = _figure(8, 5)
  fig.set_layout_engine("constrained")
  axes = fig.subplots(2, 2, sharex=True).ravel()
  steps = [h["step"] for h in history]
  for ax, key in zip(axes, ("objective", "delta_loss", "energy_vs_fp16", "violation")):
    ax.plot(steps, [h[key] for h in history], lw=1)
    ax.set_title(key, fontsize=9)
  axes[-1].set_xlabel("training step")
  axes[-2].set_xlabel("training step")
  fig.suptitle(title or "policy training")
  return _save(fig, path)


def training_curve_attachment(
    history: Sequence[dict], title: str
) -> dict[str, Callable[[pathlib.Path], Any]]:
  """``{"training_curve.png": writer}`` for ``policy_io.save`` (empty without a history)."""
  if not history:
    return {}
  return {"training_curve.png": lambda path: training_curve(history, path, title)}


# --------------------------------------------------------------------------------------
# The demo.


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    path: str | pathlib.Path,
    *,
    title: str,
    ylabel: str,
    reference: float | None = None,
    reference_label: str = "",
) -> pathlib.Path:
  """A bar chart with an optional dashed reference line (e.g. fp32 accuracy)."""
  fig = _figure(max(5.0, 0.8 * len(labels) + 2), 3.6, dpi=120)
  ax = fig.subplots()
  bars = ax.bar(range(len(labels)), values, color="#4C72B0")
  ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=8)
  ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  if reference is not None:
    ax.axhline(reference, color="#C44E52", linestyle="--", linewidth=1, label=reference_label)
    ax.legend(loc="lower left", fontsize=8)
  fig.tight_layout()
  return _save(fig, path)
