"""Tables for the terminal and figures (PNG) for run directories."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from aprec.emulator.ops import Op


def console() -> Console:
  """A console that keeps tables readable when output goes to a file or pipe (width 120)."""
  con = Console(highlight=False)
  return con if con.is_terminal else Console(highlight=False, width=120)


def op_table(ops: Sequence[Op], title: str = "") -> Table:
  """The op table: name, kind, shapes, MACs, weight and activation elements."""
  table = Table(title=title or None)
  for col, justify in [("#", "right"), ("op", "left"), ("kind", "left"),
                       ("lhs × rhs → out", "left"), ("MACs", "right"), ("weights", "right"),
                       ("activations", "right")]:
    table.add_column(col, justify=justify, no_wrap=col != "lhs × rhs → out")
  shape = lambda s: "×".join(map(str, s))
  for i, op in enumerate(ops):
    table.add_row(str(i), op.name, "conv" if op.kind.startswith("conv") else "matmul",
                  f"{shape(op.lhs_shape)} · {shape(op.rhs_shape)} → {shape(op.out_shape)}",
                  f"{op.macs:,}", f"{op.weight_elements:,}", f"{op.activation_elements:,}")
  return table


def rows_table(rows: Sequence[dict], title: str = "", formats: dict | None = None) -> Table:
  """A table of dict rows (columns from the first row); ``formats`` maps column → format."""
  formats = formats or {}
  table = Table(title=title or None)
  if not rows:
    return table
  for col in rows[0]:
    table.add_column(col, justify="left" if isinstance(rows[0][col], str) else "right")
  for row in rows:
    table.add_row(*(format(v, formats.get(k, "")) if not isinstance(v, str) else v
                    for k, v in row.items()))
  return table


def bar_chart(labels: Sequence[str], values: Sequence[float], path: str | pathlib.Path, *,
              title: str, ylabel: str, reference: float | None = None,
              reference_label: str = "") -> pathlib.Path:
  """Write a bar chart PNG; an optional dashed reference line (e.g. fp32 accuracy)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(labels) + 2), 3.6), dpi=120)
  bars = ax.bar(range(len(labels)), values, color="#4C72B0")
  ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=8)
  ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  if reference is not None:
    ax.axhline(reference, color="#C44E52", linestyle="--", linewidth=1, label=reference_label)
    ax.legend(loc="lower left", fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def plot_sim_trace(metrics, path: str | pathlib.Path, title: str | None = None) -> pathlib.Path:
  """PNG trace of a simulator run: power vs cap, buffer occupancy, PE availability, latency
  vs deadline, temperature (sensor readings as dots, ground truth as lines)."""
  import jax
  import numpy as np
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  m = jax.tree.map(np.asarray, metrics)
  t = np.arange(m.latency_s.shape[0])
  fig = Figure(figsize=(9, 10), constrained_layout=True)
  FigureCanvasAgg(fig)
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
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=100)
  return path
