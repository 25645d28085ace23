"""Pictures of one closed-loop study run (``aprec.rpm.study``), drawn as ``aprec.app.figures``
draws (matplotlib's Agg canvas, no global pyplot state).

- ``timeline``: the power cap with each policy's power, the deadline with each policy's
  latency, and each policy's measured quality per step;
- ``learned_modes``: the learned policy's mode per op over time (``figures.mode_heatmaps``).

Example:
  >>> import numpy as np, pathlib, tempfile
  >>> from aprec.hardware import simulator
  >>> m = simulator.Metrics(*[np.ones(4)] * len(simulator.Metrics._fields))
  >>> tr = type("T", (), {"metrics": m})()
  >>> out = pathlib.Path(tempfile.mkdtemp()) / "t.png"
  >>> timeline({"static*": tr}, {"static*": np.ones(4)}, out, "toy").name
  't.png'
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

from aprec.app import figures


def timeline(
    traces: Mapping, quality: Mapping[str, np.ndarray], path: pathlib.Path, title: str = ""
) -> pathlib.Path:
  """Cap and power, deadline and latency, and quality per step, one line per policy."""
  fig = figures._figure(10, 7.5)
  fig.set_layout_engine("constrained")
  ax_p, ax_l, ax_q = fig.subplots(3, 1, sharex=True)
  # Under thermal throttling each policy's cap follows its own heat: show the learned one's.
  shown = "learned" if "learned" in traces else next(iter(traces))
  first = traces[shown].metrics
  steps = np.arange(len(np.asarray(first.power_cap_w)))
  ax_p.plot(steps, np.asarray(first.power_cap_w), "k-", lw=2, label=f"power cap ({shown})")
  ax_l.plot(steps, np.asarray(first.deadline_s) * 1e3, "k-", lw=2, label=f"deadline ({shown})")
  for name, tr in traces.items():
    m = tr.metrics
    ax_p.plot(steps, np.asarray(m.true_power_w), lw=0.8, label=name)
    ax_l.plot(steps, np.asarray(m.latency_s) * 1e3, lw=0.8, label=name)
    ax_q.plot(steps, np.asarray(quality[name]), lw=0.9, label=name)
  ax_p.set_ylabel("power (W)")
  ax_l.set_ylabel("latency (ms)")
  ax_q.set_ylabel("quality (MRR)")
  ax_q.set_xlabel("step")
  ax_p.legend(fontsize=6, ncol=4, loc="lower left")
  ax_q.legend(fontsize=6, ncol=4, loc="lower left")
  fig.suptitle(title or "closed loop")
  return figures._save(fig, path)


def learned_modes(
    trace, op_names: Sequence[str], path: pathlib.Path, title: str = ""
) -> pathlib.Path:
  """The learned policy's mode per op (rows) over time (columns)."""
  return figures.mode_heatmaps({"learned": trace}, op_names, path, title)
