"""`ferbench models`: the zoo at a glance."""

from __future__ import annotations

import typer
from rich.table import Table

from ferbench.cli._common import console, friendly_errors


@friendly_errors
def models(
    pattern: str = typer.Argument("*", help="Shell-style filter, e.g. 'resnet*'."),
    num_classes: int = typer.Option(7, "--classes", help="Classes used to size the head."),
) -> None:
    """List every model (built-in, registered, plugin) with parameters and MFLOPs.

    The figures are cached per ferbench version and model files, so a warm call is instant.

    Example:  ferbench models 'cnn*'
    """
    from ferbench.models.catalog import catalog

    table = Table(title="ferbench models", header_style="bold")
    for column in ("model", "family", "params (M)", "MFLOPs", "input", "source", "summary"):
        table.add_column(
            column,
            justify="right" if column in ("params (M)", "MFLOPs") else "left",
            no_wrap=column != "summary",
            overflow="fold",
        )
    for row in catalog(pattern, num_classes):
        size = row["input_size"]
        table.add_row(
            row["name"],
            row["family"],
            _millions(row["parameters"]),
            f"{row['flops'] / 1e6:,.1f}",
            f"{size}x{size}x{row['in_chans']}",
            row["source"],
            row["summary"],
        )
    console.print(table)
    console.print(
        "[dim]Any timm architecture also works by name: timm/<name>, e.g. timm/efficientnet_b0.[/]"
    )


def _millions(count: int) -> str:
    return f"{count / 1e6:.2f}" if count >= 10_000 else f"{count / 1e6:.6f}".rstrip("0")
