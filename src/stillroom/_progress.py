"""Rich progress bars for long phases (training epochs and steps), shared by the CLI and the demo."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["console", "training_progress"]

console = Console(stderr=True)


@contextmanager
def training_progress(label: str, enabled: bool = True) -> Iterator:
    """Yield a ``(phase, done, total)`` callback driving an epoch bar and a step bar (or a no-op when disabled)."""
    if not enabled:
        yield None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        tasks: dict[str, int] = {}

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

        yield update
