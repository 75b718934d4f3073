"""A rich progress bar per epoch (loss, accuracy, ETA) when stdout is a terminal; a no-op otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class EpochBar:
    """Wraps one rich Progress; `progress=None` makes every call a no-op (non-TTY, progress=False)."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.task = None

    def start(self, epoch: int, epochs: int, batches: int) -> None:
        if self.progress is None:
            return
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(f"epoch {epoch}/{epochs}", total=batches, loss=0.0, acc=0.0)

    def advance(self, loss: float, accuracy: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, loss=loss, acc=accuracy)


@contextmanager
def epoch_bar(enabled: bool) -> Iterator[EpochBar]:
    console = Console()
    if not (enabled and console.is_terminal):
        yield EpochBar(None)
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.3f}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        yield EpochBar(progress)


def epoch_line(m: dict, epochs: int) -> str:
    """One epoch's log line."""

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    return (
        f"epoch {m['epoch']}/{epochs}  loss {m['train_loss']:.4f}  train_acc {fmt(m['train_accuracy'])}  "
        f"val_acc {fmt(m['val_accuracy'])}  lr {m['lr']:.3g}  {m['seconds']:.1f}s"
    )
