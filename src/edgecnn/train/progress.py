"""Rich progress bars for training (loss, accuracy, images/s); plain log lines when not on a terminal."""
from __future__ import annotations

import logging

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

log = logging.getLogger("edgecnn.train")


class TrainProgress:
    def __init__(self, epochs: int, steps_per_epoch: int, enabled: bool = True) -> None:
        self.epochs, self.steps = epochs, steps_per_epoch
        console = Console(stderr=True)
        self.live = enabled and console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f} acc {task.fields[acc]:.3f} {task.fields[ips]:.0f} img/s"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not self.live, transient=False)
        self.task: TaskID | None = None

    def __enter__(self) -> TrainProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def start_epoch(self, epoch: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task("train", total=self.steps, epoch=epoch + 1, epochs=self.epochs,
                                           loss=0.0, acc=0.0, ips=0.0)

    def step(self, loss: float, acc: float, ips: float) -> None:
        assert self.task is not None, "step() before start_epoch()"
        self.progress.update(self.task, advance=1, loss=loss, acc=acc, ips=ips)

    def end_epoch(self, row: dict) -> None:
        line = (f"epoch {row['epoch']}/{self.epochs}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f} | "
                f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f} | {row['images_per_s']:.0f} img/s, "
                f"{row['seconds']:.1f}s")
        if (left := self.epochs - row["epoch"]) > 0:  # at this epoch's pace
            line += f", about {left * row['seconds'] / 60:.1f} min for the {left} epoch(s) left"
        if self.live:
            self.progress.console.print(line)
        else:
            log.info(line)
