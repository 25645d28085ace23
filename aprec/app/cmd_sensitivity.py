"""``aprec analyze`` and ``aprec plan``: sensitivity profiles and static mixed-precision plans.

Classifiers calibrate on the val split; validation, plans and fronts are measured on the
held-out test split. A text task (``minilm_l6``'s docstring retrieval: calibration, val and
test splits) calibrates on ``calibration``, validates on ``val`` and measures its Pareto
front on ``test``; its profile's Δloss is ``1 - cos`` to the fp32 embeddings.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np
import tyro

from aprec.app import inputs, tables
from aprec.app.cmd_model import AsJson
from aprec.app.progress import bars as progress_bars

# Calibrate on val: unseen in training like the test split (the train split is memorised,
# so its Δloss comes out several times smaller). One batch size for calibration and
# held-out data (3 val and 6 test batches): per-tensor activation scales depend on it.
CALIBRATION_SPLIT, CALIBRATION_BATCH = "val", 60
HELDOUT_SPLIT = "test"
# A text task: the first TEXT_PAIRS pairs (summary and body: 2 texts each) of calibration
# and val, in batches of TEXT_BATCH texts of 64 tokens (enough for ρ >= 0.99 on MiniLM-L6
# in ~10 minutes on two CPU cores; per-token scales make Δloss independent of the batch).
TEXT_SPLITS = ("calibration", "val", "test")
TEXT_PAIRS, TEXT_BATCH = 32, 16


def is_text_task(loaded) -> bool:
  """Whether a loaded model's data are a text task's calibration/val/test splits."""
  return tuple(loaded.data._fields) == TEXT_SPLITS


def _heldout(loaded, batch_size: int, pairs: int):
  """The held-out batches validation measures on, and their name."""
  from aprec.emulator import batching

  if is_text_task(loaded):
    val = loaded.data.val.head(min(pairs, loaded.data.val.num_pairs))
    return batching.split(val.x, val.y, batch_size), f"docstrings/val[:{val.num_pairs} pairs]"
  test = getattr(loaded.data, HELDOUT_SPLIT)
  return batching.split(test.x, test.y, batch_size), f"digits/{HELDOUT_SPLIT}"


def front_evaluator(loaded, split: str = HELDOUT_SPLIT):
  """The evaluator a Pareto front is measured with: accuracy for a classifier, retrieval
  metrics (recall@k, MRR) on the whole split for a text task, at the emulator's default
  (per-token) activation scaling, as profiles are computed."""
  from aprec.emulator.pak import DEFAULT_ACTIVATION_SCALING
  from aprec.emulator.retrieval_scoring import RetrievalEvaluator
  from aprec.emulator.scoring import Evaluator

  if is_text_task(loaded):
    return RetrievalEvaluator(
        loaded.apply_fn,
        loaded.params,
        getattr(loaded.data, split),
        batch_rows=64,
        activation_scaling=DEFAULT_ACTIVATION_SCALING,
    )
  return Evaluator.for_model(loaded, split)


def _validation_rows(summary: dict) -> list[dict]:
  return [
      {
          "method": name,
          "ρ single op": s["spearman_single_op"],
          "pairs": s["n_pairs"],
          "ρ additive": s["spearman_additive"],
          "R² additive": s["r2_additive"],
          "Pearson² additive": s["pearson_r2_additive"],
          "assignments": s["n_assignments"],
      }
      for name, s in summary["scores"].items()
  ]


def analyze(
    model: tyro.conf.Positional[str],
    method: str = "perturbation",
    validate: bool = False,
    as_json: AsJson = False,
    out: pathlib.Path | None = None,
    overwrite: bool = False,
    loss: str | None = None,
    split: str | None = None,
    batch_size: int | None = None,
    pairs: int = TEXT_PAIRS,
) -> None:
  """Compute a model's sensitivity profile (predicted Δloss per op and mode) and save it.

  Writes the profile (orbax arrays + profile.json) and heatmap.png to OUT; with
  --validate also validation.json, validation_scatter.png and pareto_bits.png.

  Args:
    model: a reference model (digits_cnn, digits_vit) or package.module:factory.
    method: perturbation (measured), taylor, fisher, hessian or tracked; comma-separated
      to combine (the first is the primary table), or `all`.
    validate: also measure on the test split: Spearman ρ of every method against measured
      single-op Δloss (all non-fp32 modes), and ρ / R² of summed predictions over 128
      random mixed assignments.
    as_json: print JSON instead of tables.
    out: the profile directory (default: checkpoints/MODEL/profile, beside the model;
      runs/profiles/MODULE.FACTORY for your own model).
    overwrite: replace a profile already at OUT (the shipped one, by default).
    loss: what Δloss measures: `kl` (cross-entropy against the fp32 model's predictions,
      i.e. KL(p_fp32 ‖ p_mode); label-free, low-noise; the classifiers' default), `ce`
      (against the labels) or `cosine` (1 - cos to the fp32 outputs: an embedding model's,
      minilm_l6's default).
    split: calibration split: `val` (unseen in training, like the test data) or `train`
      (7x the data and a slightly better ranking, but memorised: its Δloss comes out
      several times smaller than on unseen data); `calibration` for minilm_l6 (default).
    batch_size: examples per calibration batch, also used for the held-out batches
      (per-tensor activation scales, and so Δloss, depend on it); default 60 (16 texts).
    pairs: minilm_l6: docstring pairs (2 texts each) of the calibration and val splits used.
  """
  from aprec.planning import planner
  from aprec.sensitivity import methods as sensitivity
  from aprec.app import figures
  from aprec.sensitivity import validation
  from aprec.sensitivity import profile as profile_lib

  inputs.model_ref(model)
  out = inputs.default_profile_dir(model) if out is None else pathlib.Path(out)
  inputs.artifact_out(
      out, overwrite=overwrite, marker=profile_lib.JSON_FILE, what="sensitivity profile"
  )
  if loss is not None:
    inputs.one_of(loss, sensitivity.LOSSES, "--loss")
  sensitivity.parse_methods(method)
  if batch_size is not None and batch_size <= 0:
    raise ValueError(f"--batch-size {batch_size}; expected a positive number of examples")
  if pairs <= 0:
    raise ValueError(f"--pairs {pairs}; expected a positive number of docstring pairs")
  loaded = inputs.load_model(model)
  text = is_text_task(loaded)
  held_out = "val" if text else HELDOUT_SPLIT
  split = ("calibration" if text else CALIBRATION_SPLIT) if split is None else split
  batch_size = (TEXT_BATCH if text else CALIBRATION_BATCH) if batch_size is None else batch_size
  loss = sensitivity.default_loss(loaded) if loss is None else loss
  if split in (held_out, HELDOUT_SPLIT):
    raise ValueError(
        f"calibrating on the {split} split would validate (or plan) on the data it was "
        f"fitted to; use --split {'calibration' if text else 'train or --split val'}"
    )
  inputs.one_of(split, tuple(s for s in loaded.data._fields if s != HELDOUT_SPLIT), "--split")
  inputs.integer_labels(loaded, split, loss)
  attachments: dict[str, Any] = {}
  with progress_bars(not as_json) as progress:
    prof = sensitivity.analyze_model(
        loaded,
        methods=method,
        split=split,
        batch_size=batch_size,
        loss=loss,
        progress=progress,
        num_pairs=min(pairs, getattr(loaded.data, split).num_pairs) if text else None,
    )
    summary = None
    if validate:
      heldout, heldout_name = _heldout(loaded, batch_size, pairs)
      extra = {}
      if "hessian" in prof.details:
        extra["hessian_weights"] = np.asarray(prof.details["hessian"]["weights_only"])
      val = validation.validate(
          prof,
          loaded.apply_fn,
          loaded.params,
          heldout,
          dataset=heldout_name,
          extra_tables=extra,
          progress=progress,
      )
      summary = val.summary()
      front = planner.pareto_front(
          prof,
          front_evaluator(loaded),
          kind="bits",
          delta_fn=lambda rows: validation.measure_assignments(
              loaded.apply_fn, loaded.params, heldout, rows, loss=prof.loss
          )[0],
      )
      summary["pareto_bits"] = [vars(p) for p in front]
      prof = prof.with_details(validation=summary)
      attachments["validation.json"] = lambda p: p.write_text(
          json.dumps(val.to_json(), indent=2) + "\n"
      )
      attachments["validation_scatter.png"] = lambda p: figures.scatter(val, p, model=model)
      metric = "mrr" if text else "accuracy"
      attachments["pareto_bits.png"] = lambda p: figures.pareto(
          front, p, kind="bits", model=model, metric=metric
      )
  attachments["heatmap.png"] = lambda p: figures.heatmap(prof, p)
  where = profile_lib.save(prof, out, attachments=attachments, overwrite=overwrite)
  if as_json:
    print(
        json.dumps(
            {
                "model": model,
                "profile": str(where),
                "methods": list(prof.estimates),
                "seconds": prof.details.get("seconds"),
                "validation": summary,
            },
            indent=2,
            default=str,
        )
    )
    return
  con = tables.console()
  for name in prof.estimates:
    con.print(tables.profile_table(prof, name))
  if summary is not None:
    con.print(
        tables.rows_table(
            _validation_rows(summary),
            title=f"{model}: predicted vs measured Δ{summary['loss']} loss on {summary['dataset']}",
            formats={
                "ρ single op": ".3f",
                "ρ additive": ".3f",
                "R² additive": ".3f",
                "Pearson² additive": ".3f",
            },
        )
    )
  con.print(f"wrote {where}")


def plan(
    model: tyro.conf.Positional[str],
    budget: str = "bits=4.5",
    as_json: AsJson = False,
    profile: pathlib.Path | None = None,
    allow_other_weights: bool = False,
) -> None:
  """Plan the mixed-precision assignment with the least predicted Δloss within a budget.

  Uses the model's saved profile (run `aprec analyze MODEL` first) and measures the plan
  on the test split beside fp32.

  Args:
    model: a reference model (digits_cnn, digits_vit) or package.module:factory.
    budget: KIND=NUMBER with KIND one of: `bits` (average bits per weight, e.g. bits=4.5),
      `weight_bytes` (bytes of all weights, e.g. weight_bytes=20000), `bops`
      (bit-operations per example, Σ MACs·bits_w·bits_a, e.g. bops=1e9), `energy_j` or
      `latency_s` (per example on an NNP, e.g. energy_j=2e-9 or
      latency_s=1e-6@datacenter_gpu or @my_npu.json; default preset edge_npu).
    as_json: print JSON instead of tables.
    profile: the profile directory (default: where `aprec analyze MODEL` writes it).
    allow_other_weights: use a profile computed with other weights (warns).
  """
  from aprec.planning import planner
  from aprec.sensitivity import validation
  from aprec.sensitivity import profile as profile_lib
  from aprec.emulator.formats import MODES

  inputs.model_ref(model)
  parsed = planner.parse_budget(budget)
  loaded = inputs.load_model(model)
  ev = front_evaluator(loaded)
  prof = profile_lib.load(
      inputs.default_profile_dir(model) if profile is None else profile,
      expect=ev.emulator.ops,
      params=loaded.params,
      allow_other_params=allow_other_weights,
  )
  inputs.integer_labels(loaded, HELDOUT_SPLIT, prof.loss)
  chosen = planner.plan(prof, parsed)
  rows = np.stack([np.zeros(len(chosen.assignment), np.int32), chosen.assignment])
  metrics = ev.measure(rows)._asdict()
  heldout, heldout_name = _heldout(loaded, prof.batch_size, TEXT_PAIRS)
  delta, delta_err, _ = validation.measure_assignments(
      loaded.apply_fn, loaded.params, heldout, chosen.assignment[None], loss=prof.loss
  )
  result = {
      "model": model,
      **chosen.to_dict(prof.op_names),
      "method": prof.method,
      "loss": prof.loss,
      "measured": {
          "split": HELDOUT_SPLIT,
          "delta_loss": float(delta[0]),
          "delta_loss_stderr": float(delta_err[0]),
          "delta_loss_on": heldout_name,
          **{k: float(v[1]) for k, v in metrics.items()},
          **{f"fp32_{k}": float(v[0]) for k, v in metrics.items()},
      },
  }
  if as_json:
    print(json.dumps(result, indent=2))
    return
  con = tables.console()
  rows = [
      {
          "op": op.name,
          "mode": mode,
          "weights": op.weight_elements,
          "predicted Δloss": float(prof.delta_loss[i, MODES.index(mode)]),
      }
      for i, (op, mode) in enumerate(zip(prof.ops, chosen.modes))
  ]
  con.print(
      tables.rows_table(
          rows,
          title=f"{model}: plan for {parsed} ({prof.method} profile)",
          formats={"weights": ",", "predicted Δloss": ".2e"},
      )
  )
  m = result["measured"]
  metric = "mrr" if is_text_task(loaded) else "accuracy"
  con.print(
      f"uses {parsed.kind}={chosen.used:.6g}{'' if chosen.exact else ' (rounded grid)'}; "
      f"predicted Δ{prof.loss} {chosen.predicted_delta_loss:.4g}, measured "
      f"{m['delta_loss']:.4g} ± {m['delta_loss_stderr']:.1g}; {HELDOUT_SPLIT} {metric} "
      f"{m[metric]:.4f} (fp32 {m['fp32_' + metric]:.4f})"
  )
