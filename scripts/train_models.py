"""Retrains the shipped reference models from scratch and writes their checkpoints.

Usage::

  python scripts/train_models.py [--models digits_cnn digits_vit] [--out checkpoints]

Training is deterministic: fixed seeds for the data split, the initialisation and the
minibatch order, a fixed number of epochs (nothing is selected on test data), and a fixed
number of CPUs. XLA:CPU splits loops and reductions by the number of CPUs the process may
use when JAX starts, and that changes the last bits of a training step (one ViT step: 2,293
of 18,154 gradients differ between 1 and 2 CPUs), so before JAX starts this script
restricts itself to ``TRAIN_CPUS`` (2) CPUs. With the same CPU model and library versions
a retrain is then bitwise the same on any machine with at least 2 CPUs; with fewer it
warns, and the weights differ (README, "Reference models"). On two CPU cores the CNN
trains in about 30 s, the ViT in about 2 minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any

_REPO = pathlib.Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
  sys.path.insert(0, str(_REPO))  # run from a checkout without installing the package

TRAIN_CPUS = 2  # the CPU count the shipped digits_cnn was trained with


def pin_cpus(n: int = TRAIN_CPUS) -> int:
  """Restricts this process to its first ``n`` allowed CPUs; returns how many it now has.

  Must run before JAX starts its CPU backend (the first computation): XLA reads the count
  then and keeps it. Without ``os.sched_setaffinity`` (not Linux) nothing changes.
  """
  if not hasattr(os, "sched_setaffinity"):
    return os.cpu_count() or 1
  allowed = sorted(os.sched_getaffinity(0))
  os.sched_setaffinity(0, allowed[:n])
  if len(allowed) < n:
    print(
        f"warning: training on {len(allowed)} CPU(s), not {n}: the weights will differ "
        f"from a retrain on {n} CPUs (see the README's Reference models)",
        file=sys.stderr,
    )
  return min(n, len(allowed))


CPUS = pin_cpus()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from rich.progress import (  # noqa: E402
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from aprec import (
    checkpoint,  # noqa: E402
    models,  # noqa: E402
)
from aprec.models import data as data_lib  # noqa: E402
from aprec.models import metrics  # noqa: E402
from aprec.versions import library_versions  # noqa: E402

SEED = 0
LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scikit-learn")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Training of one model: adamw with linear warmup then cosine decay to 0, and random
  translations of up to ``max_shift_px`` pixels as augmentation."""

  epochs: int
  batch_size: int = 64
  peak_learning_rate: float = 3e-3
  warmup_epochs: int = 2
  weight_decay: float = 1e-4
  grad_clip_norm: float = 1.0
  max_shift_px: int = 1


# Chosen on validation accuracy (two initialisation seeds each) among a few
# epochs / learning-rate / weight-decay settings, with and without augmentation.
CONFIGS = {
    "digits_cnn": TrainConfig(epochs=40, peak_learning_rate=3e-3, weight_decay=1e-2),
    "digits_vit": TrainConfig(
        epochs=300, peak_learning_rate=5e-3, weight_decay=5e-2, warmup_epochs=5
    ),
}


def _steps_per_epoch(n_train: int, batch_size: int) -> int:
  return n_train // batch_size  # batches use drop_remainder=True


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
  """Global-norm clipping, then adamw on a warmup-cosine learning-rate schedule."""
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=config.peak_learning_rate,
      warmup_steps=config.warmup_epochs * steps_per_epoch,
      decay_steps=config.epochs * steps_per_epoch,
      end_value=0.0,
  )
  return optax.chain(
      optax.clip_by_global_norm(config.grad_clip_norm),
      optax.adamw(schedule, weight_decay=config.weight_decay),
  )


def train(
    name: str,
    config: TrainConfig,
    splits: data_lib.DatasetSplits,
    *,
    seed: int = SEED,
    progress: Progress | None = None,
) -> tuple[metrics.ApplyFn, Any]:
  """Trains model ``name`` from scratch; returns ``(apply_fn, trained params)``."""
  apply_fn, params = models.build(name, seed=seed)
  optimizer = make_optimizer(config, _steps_per_epoch(len(splits.train.y), config.batch_size))
  opt_state = optimizer.init(params)

  @jax.jit
  def train_step(params: Any, opt_state: Any, x: jax.Array, y: jax.Array):
    def loss_fn(p: Any) -> jax.Array:
      return metrics.cross_entropy(apply_fn(p, x), y)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  task = None
  if progress is not None:
    task = progress.add_task(name, total=config.epochs, loss=float("nan"))
  for epoch in range(config.epochs):
    losses = []
    augment_rng = np.random.default_rng((seed, epoch))
    for x, y in data_lib.batches(
        splits.train, config.batch_size, seed=seed * 1_000_003 + epoch, drop_remainder=True
    ):
      x = data_lib.random_shift(x, augment_rng, config.max_shift_px)
      params, opt_state, loss = train_step(params, opt_state, x, y)
      losses.append(loss)
    if progress is not None:
      progress.update(task, advance=1, loss=float(jnp.mean(jnp.stack(losses))))
  return apply_fn, jax.block_until_ready(params)


def train_and_save(
    name: str, out_dir: pathlib.Path, progress: Progress, seed: int = SEED, overwrite: bool = False
) -> dict:
  """Trains ``name``, evaluates it at fp32 and writes ``out_dir/name``; returns the metadata."""
  config = CONFIGS[name]
  splits = data_lib.load_digits_splits(models.DATA_SEED)
  start = time.perf_counter()
  apply_fn, params = train(name, config, splits, seed=seed, progress=progress)
  train_time_s = time.perf_counter() - start
  test_loss, test_acc = metrics.evaluate(apply_fn, params, splits.test)
  val_loss, val_acc = metrics.evaluate(apply_fn, params, splits.val)
  metadata = {
      "model": name,
      "seed": seed,
      "data": {
          "dataset": "sklearn.datasets.load_digits (8x8x1, pixels / 16)",
          "split": "stratified train_test_split: test 20%, val 10% of total, rest train",
          "train_size": len(splits.train.y),
          "val_size": len(splits.val.y),
          "test_size": len(splits.test.y),
      },
      "data_seed": models.DATA_SEED,
      "training": {
          "optimizer": "clip_by_global_norm + adamw, linear warmup then cosine decay to 0",
          **dataclasses.asdict(config),
          "steps_per_epoch": _steps_per_epoch(len(splits.train.y), config.batch_size),
          "minibatch_seed": "seed * 1000003 + epoch",
          "augmentation": "random_shift, rng np.random.default_rng((seed, epoch))",
      },
      "epochs": config.epochs,
      "test_accuracy_fp32": test_acc,
      "test_loss_fp32": test_loss,
      "val_accuracy_fp32": val_acc,
      "val_loss_fp32": val_loss,
      "eval_batch_size": metrics.EVAL_BATCH_SIZE,
      "num_params": int(sum(leaf.size for leaf in jax.tree.leaves(params))),
      "versions": library_versions(LIBRARIES),
      "cpus": CPUS,
      "train_time_s": round(train_time_s, 2),
  }
  checkpoint.save(out_dir / name, params, metadata, overwrite=overwrite)
  return metadata


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument(
      "--models",
      nargs="+",
      default=list(models.NAMES),
      choices=models.NAMES,
      help="models to train (default: all)",
  )
  parser.add_argument(
      "--overwrite",
      action="store_true",
      help="replace existing checkpoints (their profile/ and policy/ go too)",
  )
  parser.add_argument(
      "--out",
      type=pathlib.Path,
      default=_REPO / "checkpoints",
      help="checkpoint root; each model goes to OUT/<name>/ (default: %(default)s)",
  )
  parser.add_argument(
      "--seed",
      type=int,
      default=SEED,
      help="initialisation and minibatch seed (default: %(default)s)",
  )
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)
  columns = (
      TextColumn("{task.description:<11}"),
      BarColumn(),
      MofNCompleteColumn(),
      TextColumn("epochs  loss {task.fields[loss]:.4f}"),
      TimeElapsedColumn(),
  )
  results = []
  with Progress(*columns) as progress:
    for name in args.models:
      results.append(
          train_and_save(name, args.out, progress, seed=args.seed, overwrite=args.overwrite)
      )
  for m in results:
    print(
        f"{m['model']}: test acc {m['test_accuracy_fp32']:.4f}  val acc "
        f"{m['val_accuracy_fp32']:.4f}  test loss {m['test_loss_fp32']:.4f}  "
        f"{m['num_params']} params  {m['train_time_s']:.1f} s -> {args.out / m['model']}"
    )


if __name__ == "__main__":
  main()
