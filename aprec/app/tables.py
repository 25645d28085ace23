"""Tables for the terminal (rich): op tables, rows of dicts, sensitivity profiles."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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
  for col, justify in [
      ("#", "right"),
      ("op", "left"),
      ("kind", "left"),
      ("lhs × rhs → out", "left"),
      ("MACs", "right"),
      ("weights", "right"),
      ("activations", "right"),
  ]:
    table.add_column(col, justify=justify, no_wrap=col != "lhs × rhs → out")
  shape = lambda s: "×".join(map(str, s))
  for i, op in enumerate(ops):
    table.add_row(
        str(i),
        op.name,
        "conv" if op.kind.startswith("conv") else "matmul",
        f"{shape(op.lhs_shape)} · {shape(op.rhs_shape)} → {shape(op.out_shape)}",
        f"{op.macs:,}",
        f"{op.weight_elements:,}",
        f"{op.activation_elements:,}",
    )
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
    table.add_row(
        *(format(v, formats.get(k, "")) if not isinstance(v, str) else v for k, v in row.items())
    )
  return table


def profile_table(profile, method: str | None = None) -> Table:
  """A ``rich`` table: one row per op, ``Δloss ± stderr`` per mode."""
  method = profile.method if method is None else method
  est = profile.estimates[method]
  table = Table(
      title=f"{profile.model}: predicted Δ{profile.loss} loss ({method}, "
      f"{profile.dataset}, {profile.n_batches}×{profile.batch_size})",
      caption="fp32 is the reference (0); ± one standard error",
  )
  table.add_column("op", overflow="fold")
  for m in profile.modes[1:]:
    table.add_column(m, justify="right")
  for i, op in enumerate(profile.ops):
    cells = [
        f"{est.delta_loss[i, j]:.1e}"
        + (f"\n±{est.stderr[i, j]:.0e}" if np.isfinite(est.stderr[i, j]) else "")
        for j in range(1, len(profile.modes))
    ]
    table.add_row(op.name, *cells)
  return table
