"""Figures of closed-loop runs: power vs cap, each op's mode over time, accuracy vs energy."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

from aprec.emulator.formats import MODES


def _figure(width: float, height: float):
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=(width, height), constrained_layout=True)
  FigureCanvasAgg(fig)
  return fig


def power_vs_cap(traces: Mapping, path: pathlib.Path, title: str = "") -> pathlib.Path:
  """One panel per policy: true power, sensor reading and the cap over steps."""
  fig = _figure(9, 1.8 * len(traces) + 0.6)
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
  fig.savefig(path, dpi=100)
  return path


def mode_heatmaps(traces: Mapping, op_names: Sequence[str], path: pathlib.Path,
                  title: str = "") -> pathlib.Path:
  """One heatmap per policy: op (rows) × step (columns), colour = mode."""
  fig = _figure(9, (0.25 * len(op_names) + 0.8) * len(traces) + 0.6)
  axes = np.atleast_1d(fig.subplots(len(traces), 1, sharex=True))
  im = None
  for ax, (name, tr) in zip(axes, traces.items()):
    a = np.asarray(tr.assignments).T
    im = ax.imshow(a, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0,
                   vmax=len(MODES) - 1)
    ax.set_yticks(range(len(op_names)), op_names if len(op_names) <= 8 else
                  [n if i % 3 == 0 else "" for i, n in enumerate(op_names)], fontsize=6)
    ax.set_title(name, fontsize=8)
  cbar = fig.colorbar(im, ax=list(axes), ticks=range(len(MODES)))
  cbar.ax.set_yticklabels(MODES, fontsize=7)
  axes[-1].set_xlabel("step")
  fig.suptitle(title or "mode of each op over time")
  fig.savefig(path, dpi=100)
  return path


def accuracy_vs_energy(rows: Sequence[dict], path: pathlib.Path, reference: float | None = None,
                       title: str = "") -> pathlib.Path:
  """Scatter: measured accuracy against mean energy per inference, one point per policy."""
  fig = _figure(6, 4)
  ax = fig.subplots()
  for r in rows:
    ax.scatter(r["energy_per_inference_j"] * 1e9, r["accuracy"] * 100)
    ax.annotate(r["policy"], (r["energy_per_inference_j"] * 1e9, r["accuracy"] * 100),
                fontsize=7, xytext=(3, 3), textcoords="offset points")
  if reference is not None:
    ax.axhline(reference * 100, color="r", ls="--", lw=1, label="fp32")
    ax.legend(fontsize=7)
  ax.set_xlabel("energy per inference (nJ)")
  ax.set_ylabel("measured accuracy (%)")
  ax.set_title(title or "accuracy vs energy")
  fig.savefig(path, dpi=100)
  return path


def training_curve(history: Sequence[dict], path: pathlib.Path, title: str = "") -> pathlib.Path:
  """Objective, predicted Δloss, energy vs fp16 and violation rate over training steps."""
  fig = _figure(8, 5)
  axes = fig.subplots(2, 2, sharex=True).ravel()
  steps = [h["step"] for h in history]
  for ax, key in zip(axes, ("objective", "delta_loss", "energy_vs_fp16", "violation")):
    ax.plot(steps, [h[key] for h in history], lw=1)
    ax.set_title(key, fontsize=9)
  axes[-1].set_xlabel("training step")
  axes[-2].set_xlabel("training step")
  fig.suptitle(title or "policy training")
  fig.savefig(path, dpi=100)
  return path
