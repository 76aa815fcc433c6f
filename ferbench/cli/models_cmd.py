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
    """List every model (built-in, registered, plugin) with parameters, MFLOPs and the weights
    shipped inside the package (tag and measured test accuracy); a shipped name prints its card.

    The figures are cached per ferbench version and model files, so a warm call is instant.

    Examples:
      ferbench models 'cnn*'
      ferbench models vggfer_s.fer2013      # the model card: data, protocol, per-class results
    """
    from ferbench.models.catalog import catalog
    from ferbench.models.pretrained import read_index

    shipped = read_index()
    if pattern in shipped:
        from rich.markdown import Markdown

        console.print(Markdown(shipped[pattern].card_path.read_text()))
        return
    weights: dict[str, list[str]] = {}
    for w in shipped.values():
        weights.setdefault(w.model, []).append(f"{w.name} {w.metrics.get('test_acc', 0):.1%}")
    table = Table(title="ferbench models", header_style="bold")
    columns = ("model", "family", "params (M)", "MFLOPs", "input", "weights (test acc)", "summary")
    for column in columns:
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
            "\n".join(weights.get(row["name"], [])),
            row["summary"] + (f" [dim]({row['source']})[/]" if row["source"] != "builtin" else ""),
        )
    console.print(table)
    if shipped:
        console.print(
            "[dim]Shipped weights work without training: ferbench predict photo.jpg --model "
            f"{next(iter(shipped))}; ferbench models {next(iter(shipped))} shows the card.[/]"
        )
    console.print(
        "[dim]Any timm architecture also works by name: timm/<name>, e.g. timm/efficientnet_b0.[/]"
    )


def _millions(count: int) -> str:
    return f"{count / 1e6:.2f}" if count >= 10_000 else f"{count / 1e6:.6f}".rstrip("0")
