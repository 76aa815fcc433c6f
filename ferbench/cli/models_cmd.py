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

    Example:  ferbench models 'cnn*'
    """
    from ferbench.models import create_model, list_models, model_card
    from ferbench.models.profile import count_flops, count_parameters

    table = Table(title="ferbench models", header_style="bold")
    for column in ("model", "family", "params (M)", "MFLOPs", "input", "source", "summary"):
        table.add_column(
            column,
            justify="right" if column in ("params (M)", "MFLOPs") else "left",
            no_wrap=column != "summary",
            overflow="fold",
        )
    for name in list_models(pattern):
        card = model_card(name)
        model = create_model(name, num_classes=num_classes, in_chans=card.in_chans)
        flops = count_flops(model, card.in_chans, card.input_size)
        table.add_row(
            name,
            card.family,
            _millions(count_parameters(model)),
            f"{flops / 1e6:,.1f}",
            f"{card.input_size}x{card.input_size}x{card.in_chans}",
            card.source,
            card.summary,
        )
    console.print(table)
    console.print(
        "[dim]Any timm architecture also works by name: timm/<name>, e.g. timm/efficientnet_b0.[/]"
    )


def _millions(count: int) -> str:
    return f"{count / 1e6:.2f}" if count >= 10_000 else f"{count / 1e6:.6f}".rstrip("0")
