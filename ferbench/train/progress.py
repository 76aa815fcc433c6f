"""Rich progress for a grid: trials outside, epochs inside with running loss and accuracy."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ferbench.config import Trial
from ferbench.runs import time_left
from ferbench.train.fit import Reporter


class RichReporter(Reporter):
    def __init__(self, console: Console, total_trials: int):
        self.console = console
        self.progress = Progress(
            TextColumn("[bold blue]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.trials = self.progress.add_task("trials", total=total_trials, info="")
        self.epochs = None
        self.batches = None
        self._epoch = 0
        self._trial = ""
        self._paces: list[float] = []  # seconds of each epoch this process ran, for the eta

    def __enter__(self) -> "RichReporter":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def trial_finished(self, label: str) -> None:
        self.progress.update(self.trials, advance=1, info=label)
        for task in (self.epochs, self.batches):
            if task is not None:
                self.progress.remove_task(task)
        self.epochs = self.batches = None

    def trial_started(self, trial: Trial, start_epoch: int, epochs: int) -> None:
        self.progress.update(self.trials, info=trial.name)
        self._trial = trial.name
        self.epochs = self.progress.add_task(
            "  epochs", total=epochs, completed=start_epoch, info=""
        )
        self.batches = self.progress.add_task("  batches", total=1, info="")
        self._epoch = start_epoch
        self._paces = []

    def batch(self, step: int, steps: int, loss: float, acc: float) -> None:
        if self.batches is not None:
            self.progress.update(
                self.batches,
                total=steps,
                completed=step,
                info=f"epoch {self._epoch + 1} loss {loss:.3f} acc {acc:.3f}",
            )

    def epoch_done(self, epoch: int, epochs: int, row: dict) -> None:
        self._epoch = epoch
        self._paces.append(row["train_s"] + row["eval_s"])
        if not self.console.is_terminal:  # logs and CI: one line per epoch instead of live bars
            self.console.print(
                f"{self._trial}: epoch {epoch}/{epochs}  train acc {row['train_acc']:.3f}"
                f"  val acc {row['val_acc']:.3f}  val loss {row['val_loss']:.3f}"
                f"  {row['train_s']:.1f}s{time_left(self._paces, epochs - epoch)}"
            )
        if self.epochs is not None:
            self.progress.update(
                self.epochs,
                completed=epoch,
                info=f"train {row['train_acc']:.3f}  val {row['val_acc']:.3f}  "
                f"loss {row['val_loss']:.3f}",
            )

    def note(self, text: str) -> None:
        self.progress.console.print(f"[cyan]note:[/] {escape(text)}")
