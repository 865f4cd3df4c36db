"""Rich progress bars for long phases (training epochs and steps), shared by the CLI and the demo."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["console", "training_progress", "parallel_progress"]

# soft_wrap: a long line (a file path) is never broken by inserted newlines, so it can be copied from a terminal or
# found in a log whatever the console width (80 columns when stderr is not a terminal)
console = Console(stderr=True, soft_wrap=True)


def _bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _updater(bar: Progress, label: str) -> Callable[..., None]:
    """The ``(phase, done, total, record)`` callback of one run: an epoch bar, a step bar, a log line per epoch."""
    tasks: dict[str, TaskID] = {}

    def update(phase: str, done: int, total: int, record: dict | None = None) -> None:
        name = f"{label} epochs" if phase == "epoch" else f"{label} {phase}"
        if phase not in tasks:
            tasks[phase] = bar.add_task(name, total=total)
        bar.update(tasks[phase], completed=done, total=total)
        if phase == "epoch" and "train" in tasks:
            bar.reset(tasks["train"])
        if record:
            keys = ("train_top1", "val_top1", "val_macro_f1", "epoch_seconds")
            parts = [f"{k}={record[k]:.3f}" for k in keys if isinstance(record.get(k), float)]
            bar.console.log(f"{label} epoch {done}/{total} " + " ".join(parts))

    return update


@contextmanager
def training_progress(label: str, enabled: bool = True) -> Iterator:
    """Yield a ``(phase, done, total)`` callback driving an epoch bar and a step bar (or a no-op when disabled)."""
    if not enabled:
        yield None
        return
    with _bar() as bar:
        yield _updater(bar, label)


@contextmanager
def parallel_progress(labels: list[str]) -> Iterator[dict[str, Callable[..., None]]]:
    """One live display for runs trained at the same time (rich allows one): yield each label's callback."""
    with _bar() as bar:
        yield {label: _updater(bar, label) for label in labels}
