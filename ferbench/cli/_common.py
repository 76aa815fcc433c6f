"""What every command shares: consoles and the one-red-line error policy."""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable

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
