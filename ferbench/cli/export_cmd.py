"""`ferbench export`: a trained model as ONNX (fp32 or int8), with its parity measured."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ferbench.cli._common import (
    CheckpointOption,
    ModelOption,
    ResultsOption,
    announce_choice,
    console,
    friendly_errors,
    working,
)


@friendly_errors
def export(
    out: Path = typer.Option(..., "--out", "-o", help="The .onnx file to write."),
    model: ModelOption = None,
    checkpoint: CheckpointOption = None,
    int8: bool = typer.Option(
        False, "--int8", help="Quantize with ONNX Runtime (static when data is found)."
    ),
    opset: int = typer.Option(17, "--opset", help="ONNX opset version."),
    data: str = typer.Option(
        None, "--data", help="Faces for parity and int8 calibration (default: the run's own data)."
    ),
    kind: str = typer.Option("auto", "--kind", help="Kind of --data: auto, fer2013, folder, ..."),
    results: ResultsOption = Path("results"),
) -> None:
    """Export a checkpoint to ONNX with a dynamic batch axis and ferbench's metadata (classes,
    preprocessing, TTA, source sha256), and measure it against the PyTorch model.

    Parity is measured on the validation split of the data the model was trained on (found
    through the run's config.yaml, or given with --data): fp32 max |Δ probability| and top-1
    agreement; with --int8, agreement with fp32 and accuracy on validation and test.  The .onnx
    file then works wherever a checkpoint does (live, predict, eval, bench).

    Examples:
      ferbench export --model cnn3 --out cnn3.onnx
      ferbench export --model vggfer_s.fer2013 --out fer.onnx --int8 --data fer2013.csv
      ferbench export --checkpoint results/fast/vggfer_s/seed=0 --out vggfer_s.int8.onnx --int8
    """
    from ferbench.config import parse_data
    from ferbench.infer.export import export_checkpoint
    from ferbench.infer.predictor import resolve_source

    source = resolve_source(
        model, checkpoint, results, default=False, data=data, announce=announce_choice
    )
    spec = parse_data("--data", "data", {"kind": kind, "path": data}) if data else None
    with working("exporting") as update:
        report = export_checkpoint(source, out, int8, opset, spec, progress=update)
    console.print(
        f"[green]wrote[/] {escape(report.out)} ({report.model}, "
        f"{'int8 ' + report.quantization if report.quantization != 'none' else 'fp32'}, "
        f"{Path(report.out).stat().st_size / 1e6:.2f} MB)"
    )
    console.print(f"parity on {report.images:,} faces of {escape(report.parity_data)}:")
    console.print(
        f"  fp32 ONNX vs PyTorch: max |Δ probability| {report.fp32_max_abs_prob_diff:.2e}, "
        f"top-1 agreement {report.fp32_top1_agreement:.2%}"
    )
    if report.int8_top1_agreement is not None:
        console.print(
            f"  int8 ({report.quantization}) vs fp32 ONNX: top-1 agreement "
            f"{report.int8_top1_agreement:.2%}"
        )
    if report.accuracy:
        table = Table(title="accuracy (single view)", header_style="bold")
        names = list(next(iter(report.accuracy.values())))
        for column in ("split", *names):
            table.add_column(column, justify="left" if column == "split" else "right")
        for split, row in report.accuracy.items():
            base = row["torch"]
            cells = [f"{row[n]:.2%}" + (f" ({row[n] - base:+.2%})" if n != "torch" else "")
                     for n in names]  # fmt: skip
            table.add_row(split, *cells)
        console.print(table)
    else:
        console.print("[yellow]no labelled data found: accuracy change not measured[/] (--data)")
