"""Progress bars (rich) behind a ``progress(task, done, total)`` callback."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

Callback = Callable[[str, int, int], None]


@contextlib.contextmanager
def bars(enabled: bool = True) -> Iterator[Callback | None]:
  """Yields a ``progress(task, done, total)`` callback drawing one bar per task on stderr,
  or None when ``enabled`` is False.

  Example:
    >>> with bars(False) as progress:
    ...   progress is None
    True
  """
  if not enabled:
    yield None
    return
  from rich.console import Console
  from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn)

  live = Progress(
      TextColumn("{task.description:>24}"),
      BarColumn(),
      MofNCompleteColumn(),
      TimeElapsedColumn(),
      console=Console(stderr=True),
      transient=False,
  )
  tasks: dict[str, Any] = {}

  def update(task: str, done: int, total: int) -> None:
    if task not in tasks:
      tasks[task] = live.add_task(task, total=total)
    live.update(tasks[task], completed=done, total=total)

  with live:
    yield update
