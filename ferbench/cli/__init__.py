"""The `ferbench` command line: one small module per command."""

from __future__ import annotations

import inspect

import typer

from ferbench.cli import (
    bench_cmd,
    compare_cmd,
    crosseval_cmd,
    data_cmd,
    ensemble_cmd,
    eval_cmd,
    export_cmd,
    live_cmd,
    models_cmd,
    predict_cmd,
    register_cmd,
    run_cmd,
    ship_cmd,
)
from ferbench.utils.allocator import keep_freed_memory

app = typer.Typer(
    name="ferbench",
    help="Facial expression recognition: model zoo, benchmark runner, comparisons and live "
    "mode.\n\n"
    "Start with:  ferbench run experiments/quickstart.yaml",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("models")(models_cmd.models)
app.command("register")(register_cmd.register)
app.command("unregister")(register_cmd.unregister)
app.add_typer(data_cmd.app, name="data")
app.command("run")(run_cmd.run)
app.command("compare")(compare_cmd.compare)
app.command("ensemble")(ensemble_cmd.ensemble)
app.command("live")(live_cmd.live)
app.command("predict")(predict_cmd.predict)
app.command("eval")(eval_cmd.evaluate)
app.command("crosseval")(crosseval_cmd.crosseval)
app.command("export")(export_cmd.export)
app.command("bench")(bench_cmd.bench)
app.command("ship")(ship_cmd.ship)


def reflow(doc: str) -> str:
    """A docstring as --help text: prose lines of a paragraph joined, so the terminal wraps them
    at its width (typer keeps a docstring's line breaks); indented lines (examples) and lines
    after a colon stay lines of their own."""
    lines = inspect.cleandoc(doc).splitlines()
    out: list[str] = []
    for line in lines:
        previous = out[-1] if out else ""
        joinable = previous and line and not line[0].isspace() and not previous[0].isspace()
        if joinable and not previous.endswith(":"):
            out[-1] = f"{previous} {line}"
        else:
            out.append(line)
    return "\n".join(out)


for _typer in (app, data_cmd.app):
    for _info in _typer.registered_commands:
        _info.help = reflow(_info.help or inspect.getdoc(_info.callback) or "")


def main() -> None:
    keep_freed_memory()  # a command is a short process that computes: keep what it frees
    app()
