"""Figures of sensitivity analysis (PNG, matplotlib Agg): the profile heatmap, the
validation scatter plot and the planner's Pareto front."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np

from aprec.planning.planner import FrontPoint
from aprec.sensitivity.profile import SensitivityProfile
from aprec.sensitivity.validation import Validation


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _floor(values: np.ndarray) -> float:
  positive = values[np.isfinite(values) & (values > 0)]
  return float(positive.min()) if positive.size else 1e-8


def heatmap(profile: SensitivityProfile, path: str | pathlib.Path, *,
            method: str | None = None) -> pathlib.Path:
  """Ops × modes heatmap of predicted Δloss (log colour scale; ≤ 0 drawn at the floor).

  Example:
    >>> # heatmap(profile, "runs/analyze/heatmap.png")
  """
  from matplotlib.colors import LogNorm
  plt = _pyplot()
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  method = profile.method if method is None else method
  table = profile.table(method)
  floor = _floor(table)
  shown = np.where(np.isfinite(table) & (table > floor), table, floor)
  n_ops, n_modes = table.shape
  fig, ax = plt.subplots(figsize=(1.1 * n_modes + 3, 0.32 * n_ops + 1.8), dpi=120)
  image = ax.imshow(shown, aspect="auto", cmap="magma_r",
                    norm=LogNorm(vmin=floor, vmax=max(float(shown.max()), floor * 10)))
  ax.set_xticks(range(n_modes), profile.modes, rotation=30, ha="right")
  ax.set_yticks(range(n_ops), profile.op_names, fontsize=7 if n_ops > 12 else 9)
  for i in range(n_ops):
    for j in range(n_modes):
      ax.text(j, i, f"{table[i, j]:.1e}", ha="center", va="center", fontsize=5.5,
              color="white" if shown[i, j] > np.sqrt(floor * shown.max()) else "black")
  fig.colorbar(image, ax=ax, label="predicted Δloss")
  ax.set_title(f"{profile.model}: sensitivity ({method}, {profile.dataset})")
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def scatter(validation: Validation, path: str | pathlib.Path, *, model: str = "",
            methods: Sequence[str] | None = None) -> pathlib.Path:
  """Predicted vs measured Δloss: single-op pairs (left) and mixed assignments (right),
  one colour per method, log-log (non-positive values drawn at the floor)."""
  plt = _pyplot()
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  methods = list(validation.scores) if methods is None else list(methods)
  mask = validation.pair_mask
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), dpi=120)
  panels = [
      (axes[0], validation.measured_single[mask],
       {m: validation.predicted_single[m][mask] for m in methods}, "spearman_single_op",
       f"single op ({', '.join(validation.pair_modes)})"),
      (axes[1], validation.measured_additive,
       {m: validation.predicted_additive[m] for m in methods}, "spearman_additive",
       f"{len(validation.assignments)} random mixed assignments (sum of per-op predictions)"),
  ]
  for ax, measured, predicted, key, title in panels:
    xfloor = _floor(measured)
    for m, pred in predicted.items():
      s = validation.scores[m]
      rho = getattr(s, key)
      yfloor = _floor(pred)
      ax.scatter(np.maximum(measured, xfloor), np.maximum(pred, yfloor), s=10, alpha=0.7,
                 label=f"{m} (ρ={rho:.2f}" + (f", R²={s.r2_additive:.2f})" if key ==
                                                "spearman_additive" else ")"))
    lo = xfloor
    hi = max(float(np.nanmax(measured)), lo * 10)
    ax.plot([lo, hi], [lo, hi], "k--", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"measured Δloss ({validation.dataset})")
    ax.set_ylabel("predicted Δloss")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
  fig.suptitle(f"{model}: sensitivity predictions vs held-out measurements")
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def pareto(points: Sequence[FrontPoint], path: str | pathlib.Path, *, kind: str = "bits",
           model: str = "") -> pathlib.Path:
  """Measured accuracy against budget use, planned mixed plans beside uniform ones."""
  plt = _pyplot()
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
  for group, style in (("uniform", dict(marker="s", color="#C44E52", linestyle="none")),
                       ("mixed", dict(marker="o", color="#4C72B0", linestyle="-"))):
    pts = sorted((p for p in points if p.kind == group), key=lambda p: p.used)
    ax.plot([p.used for p in pts], [p.measured_accuracy for p in pts], label=group, **style)
    if group == "uniform":
      for p in pts:
        ax.annotate(p.label, (p.used, p.measured_accuracy), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
  ax.set_xscale("log", base=2)
  ax.set_xlabel({"bits": "average bits per weight", "weight_bytes": "weight bytes",
                 "bops": "bit-operations per example"}.get(kind, kind))
  ax.set_ylabel("measured accuracy")
  ax.set_title(f"{model}: planned mixed precision vs uniform")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path
