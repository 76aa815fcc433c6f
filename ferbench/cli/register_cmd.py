"""`ferbench register` / `unregister`: add your own model to the zoo."""

from __future__ import annotations

from pathlib import Path

import typer

from ferbench.cli._common import console, friendly_errors


@friendly_errors
def register(
    file: Path = typer.Argument(..., help="Python file with @register_model builders."),
    force: bool = typer.Option(False, "--force", help="Replace models registered before."),
) -> None:
    """Check a model file and add its models to the registry.

    Each builder is built and run on one 1xCxHxW input; its output must be 1 x num_classes.

    Example:  ferbench register my_model.py
    """
    from ferbench.models.plugins import register_file
    from ferbench.models.registry import registry_dir

    for entry in register_file(file, force=force):
        console.print(
            f"[green]registered[/] {entry['name']} ({entry['parameters']:,} parameters) "
            f"-> {registry_dir() / entry['file']}"
        )


@friendly_errors
def unregister(name: str = typer.Argument(..., help="Name of a registered user model.")) -> None:
    """Remove a user model from the registry.

    Example:  ferbench unregister my_net
    """
    from ferbench.models.plugins import unregister as remove

    remove(name)
    console.print(f"[green]unregistered[/] {name}")
