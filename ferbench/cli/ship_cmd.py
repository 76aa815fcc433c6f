"""`ferbench ship`: a finished run becomes shipped package weights (for maintainers)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from ferbench.cli._common import ScalesOption, console, friendly_errors, parse_scales


@friendly_errors
def ship(
    run: Path = typer.Argument(..., help="A finished run directory (its best.pt is shipped)."),
    tag: str = typer.Option(..., "--tag", help="Weight tag: the file becomes <model>.<tag>.pt."),
    data: str = typer.Option(
        None, "--data", help="Where the run's data is, if its recorded path is not here."
    ),
    labels: str = typer.Option(None, "--labels", help="FER+ vote file, with --data."),
    license_file: Path = typer.Option(
        None, "--license", help="Markdown with the data's license terms, copied into the card."
    ),
    out: Path = typer.Option(
        None, "--out", help="Weights folder (default: the package's ferbench/models/weights)."
    ),
    calibrate: bool = typer.Option(
        False,
        "--calibrate",
        help="Divide the output layer by the temperature that minimises the validation "
        "log-loss: probabilities that mean what they say (lower ECE), a single view's "
        "prediction unchanged.",
    ),
    scales: ScalesOption = None,
    robustness: bool = typer.Option(
        False,
        "--robustness",
        help="Measure the corruption suite and the framing gap of the shipped file on the test "
        "split for the card and the index (README: Robustness; minutes on a CPU).  Without it, "
        "the run's robustness.json (`ferbench eval DATA --model RUN --corruptions all "
        "--framing --out RUN/robustness.json`) is used where there is one.",
    ),
) -> None:
    """Write a run's best checkpoint into the package as fp16 weights with a measured card.

    The fp16 file is evaluated again on validation and test (the path `ferbench eval` takes),
    int8 accuracy and batch-1 latency are measured, sibling seeds are summarised, and
    weights/index.json records the sha256 and the figures.  Then
    create_model("<model>.<tag>", pretrained=True) and --model <model>.<tag> work.
    With --scales the shipped file keeps those test zooms: `ferbench eval` takes them
    unasked, and --calibrate fits its temperature on them.

    Example:
      ferbench ship results/weights-fer2013/vggfer_s/size=40/seed=0 --tag fer2013 \\
        --license ferbench/models/weights/LICENSE-fer2013.md --calibrate
    """
    from ferbench.config import parse_data
    from ferbench.models.pretrained import WEIGHTS_DIR
    from ferbench.models.ship import ship as ship_run

    spec = None
    if data:
        kind = "ferplus" if labels else "auto"
        spec = parse_data("--data", "data", {"kind": kind, "path": data, "labels": labels})
    text = license_file.read_text() if license_file else ""
    weights = ship_run(
        run,
        tag,
        spec,
        text,
        out or WEIGHTS_DIR,
        progress=lambda step: console.print(f"[dim]{escape(step)}[/]"),
        calibrate=calibrate,
        scales=parse_scales(scales),
        robustness=robustness,
    )
    m = weights.metrics
    temperature = f", temperature {m['temperature']:.3f}" if calibrate else ""
    console.print(
        f"[green]shipped[/] {weights.name}: {escape(str(weights.path if not out else out))} "
        f"test {m['test_acc']:.4f}, validation {m['val_acc']:.4f}, ECE {m['ece']:.4f}"
        f"{temperature}, sha256 {weights.sha256[:12]}…"
    )
