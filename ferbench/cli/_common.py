"""What every command shares: consoles and the one-red-line error policy."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape

from ferbench.errors import FerbenchError

# Logs and pipes get wide tables instead of 80 squeezed columns.
console = Console(width=None if sys.stdout.isatty() else 220)
err_console = Console(stderr=True)


def friendly_errors(fn: Callable) -> Callable:
    """Known errors become one red line on stderr and exit code 1 (traceback: FERBENCH_DEBUG=1)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (FerbenchError, FileNotFoundError, PermissionError) as exc:
            if os.environ.get("FERBENCH_DEBUG"):
                raise
            err_console.print(
                f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


# Options several commands share, declared once (typer's Annotated form).
ModelOption = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        help="A model name (its finished run under --results with the best validation accuracy "
        "on real data: the data given, else the newest run's; one line names it) or a shipped "
        "model such as vggfer_s.fer2013 (default: the shipped vggfer_s.fer2013).",
    ),
]
CheckpointOption = Annotated[
    Optional[str],
    typer.Option("--checkpoint", "-c", help="A best.pt / last.pt file or a run directory."),
]
ResultsOption = Annotated[
    Path, typer.Option("--results", "-r", help="Where run directories are (written or read).")
]
InferDeviceOption = Annotated[str, typer.Option("--device", "-d", help="cpu, cuda, mps or auto.")]
TrainDeviceOption = Annotated[
    str, typer.Option("--device", "-d", help="auto (cuda, mps, cpu), cpu, cuda or mps.")
]
MarginOption = Annotated[
    float,
    typer.Option(
        "--margin", help="Grow face boxes by this fraction per side (0.02 matches FER2013 framing)."
    ),
]

AlignOption = Annotated[
    bool,
    typer.Option(
        "--align/--no-align",
        help="Crop each detected face aligned by its five landmarks to the framing of the "
        "model's training faces (rotation, scale, shift); --no-align: the detector's box.",
    ),
]

ScalesOption = Annotated[
    Optional[str],
    typer.Option(
        "--scales",
        help="Multi-scale test views: the model's own views at each of these zooms (comma "
        "separated, 1 = the face as given), their probabilities averaged; e.g. 0.9,1,1.1. "
        "Default: the zooms its run tested with (eval.scales; 1 unless set).",
    ),
]


def parse_scales(text: str | None) -> tuple[float, ...] | None:
    """--scales "0.9,1,1.1" -> (0.9, 1.0, 1.1); None (not given) -> None: the run's own."""
    if text is None:
        return None
    from ferbench.config import zoom_problem

    try:
        scales = tuple(float(part) for part in text.split(","))
    except ValueError:
        scales = ()
    if zoom_problem(scales):
        raise FerbenchError(
            f"--scales: '{text}' is not a comma-separated list of distinct zooms from 0.5 to 2"
        )
    return scales


@contextlib.contextmanager
def working(message: str) -> Iterator[Callable[[str], None]]:
    """A spinner in a terminal; in a log (nohup, CI, a pipe), where a spinner shows nothing, each
    update is a line with the seconds since the start, so long work can be followed with tail."""
    if console.is_terminal:
        with console.status(message) as status:
            yield status.update
        return
    start = time.perf_counter()

    def line(text: str) -> None:
        console.print(f"[{time.perf_counter() - start:7.1f}s] {text}", highlight=False)

    line(message)
    yield line


def announce_default_model(model: str | None, checkpoint: str | None) -> None:
    """Say in one line (on stderr, so --json output stays clean) that the shipped model is used."""
    from ferbench.infer.predictor import default_model_note

    note = default_model_note(model, checkpoint)
    if note:
        err_console.print(f"[cyan]{escape(note)}[/]", highlight=False)


def announce_choice(line: str) -> None:
    """Say on stderr (so --json output stays clean) which run `--model NAME` took, and why."""
    err_console.print(f"[cyan]{escape(line)}[/]", highlight=False, soft_wrap=True)


def refresh_readme_table(readme: Path | None, csv_path: Path) -> None:
    """Copy the Markdown beside `csv_path` into `readme` between its markers, and say so."""
    if readme is None:
        return
    from ferbench.report.benchmarks import update_readme

    marker = f"<!-- benchmarks:{csv_path.stem} -->"
    if update_readme(readme, csv_path):
        console.print(f"[green]updated[/] the {csv_path.stem} table in {readme}")
    else:
        console.print(f"[yellow]{readme} has no {marker} markers; unchanged[/]")
