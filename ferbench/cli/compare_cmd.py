"""`ferbench compare`: leaderboards and plots from run directories."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ferbench.cli._common import console, friendly_errors, refresh_readme_table

FORMATS = {"csv", "md", "html", "png"}


@friendly_errors
def compare(
    paths: list[Path] = typer.Argument(..., help="Results folders (nested experiments are found)."),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder (default: the first path)."),
    metric: str = typer.Option(
        "accuracy",
        "--metric",
        help="Sort by: accuracy, macro_f1, balanced_accuracy, latency_batch1_ms, ...",
    ),
    group_by: list[str] = typer.Option(
        [],
        "--group-by",
        help="Keep only these settings apart (the rest pooled with seeds), e.g. --group-by lr.",
    ),
    filters: list[str] = typer.Option(
        [], "--filter", help="KEY=GLOB on settings (model=cnn*, lr=0.1) or a glob on run paths."
    ),
    formats: str = typer.Option(
        "csv,md,html,png", "--format", help="Comma list of csv, md, html, png."
    ),
    target: float = typer.Option(
        None,
        "--target",
        help="Validation accuracy for time-to-target (default: each run's eval.target_acc).",
    ),
    export: Path = typer.Option(
        None,
        "--export",
        help="Merge the leaderboard rows into a benchmark CSV "
        "(e.g. benchmarks/results-fer2013.csv) and its Markdown table, and keep each run's "
        "record (metrics, config, history; no weights) in runs/ beside it, for git: seeds "
        "trained on other machines count in later exports.",
    ),
    readme: Path = typer.Option(
        None,
        "--readme",
        help="With --export: refresh the table between <!-- benchmarks:NAME --> markers.",
    ),
    paired: bool = typer.Option(
        False,
        "--paired",
        help="Two runs (run directories or records) on the same test faces: their accuracy "
        "difference with its paired-bootstrap 95% interval and McNemar's exact p.",
    ),
    records_dir: Path = typer.Option(
        Path("benchmarks/runs"),
        "--records",
        help="With --paired: where the records of an ensemble's members are kept.",
    ),
) -> None:
    """Leaderboards, per-class views and plots from run directories.

    One leaderboard per dataset and class set (seeds grouped: mean ± std, n), failed runs
    listed, comparison.csv/.md, PNG plots and a self-contained report.html.

    With --export, finished trials of the same experiments recorded in runs/ beside the CSV
    (by earlier exports, perhaps on other machines) are counted too, unless their run
    directory is here: results/ is not in git, the records are.

    Examples:
      ferbench compare results/quickstart
      ferbench compare results/ --metric macro_f1 --filter model='resnet*' --out report/
      ferbench compare results/baseline --export benchmarks/results-fer2013.csv --readme README.md
      ferbench compare benchmarks/runs/ensemble/long9-calibrated \\
        benchmarks/runs/ensemble/long8-calibrated --paired
    """
    if paired:
        _paired(paths, records_dir, out)
        return
    from ferbench.report.leaderboard import (
        collect_runs,
        display_table,
        leader_is_uncertain,
        leaderboards,
        runs_frame,
        write_outputs,
    )
    from ferbench.report.records import keep_records, records_folder, with_records

    chosen = {f.strip() for f in formats.split(",") if f.strip()}
    if chosen - FORMATS:
        raise typer.BadParameter(f"--format takes {', '.join(sorted(FORMATS))}")
    runs = collect_runs(paths)
    if not runs:
        console.print(f"no run directories under {', '.join(map(str, paths))}")
        raise typer.Exit(1)
    records = records_folder(export) if export else None
    if records:  # seeds finished on other machines or in other sittings count too
        runs, recalled = with_records(runs, records)
        if recalled:
            console.print(
                f"counted {len(recalled)} finished trial(s) from their records in "
                f"{records} (their run directories are not here)"
            )
    frame = runs_frame(runs, target)
    boards = leaderboards(frame, metric, group_by, filters) if not frame.empty else {}
    for dataset, board in boards.items():
        shown = display_table(board)
        table = Table(title=f"{dataset}  (sorted by {metric})", header_style="bold")
        for column in shown.columns:
            table.add_column(
                column,
                justify="left" if column in ("model", "settings", "worst class") else "right",
            )
        for i, row in enumerate(shown.itertuples(index=False)):
            table.add_row(*map(str, row), style="bold green" if i == 0 else None)
        console.print(table)
        if leader_is_uncertain(board, metric):
            console.print(
                "[yellow]the leader's margin over the next entry is within one standard "
                "deviation[/]"
            )
    problems = [r for r in runs if r.status != "done"]
    if problems:
        table = Table(title="failed or unfinished runs", header_style="bold red")
        for column in ("run", "status", "error or progress"):
            table.add_column(column)
        for r in problems:
            table.add_row(escape(str(r.path)), r.status, escape(r.error))
        console.print(table)
        if any(r.status in ("stopped", "interrupted") for r in problems):
            console.print("stopped runs resume from their last.pt when their experiment runs again")
    target_value = target if target is not None else _default_target(runs)
    written = write_outputs(boards, runs, frame, out or paths[0], metric, chosen, target_value)
    for path in written:
        console.print(f"[green]wrote[/] {path}")
    if export:
        from ferbench.report.benchmarks import benchmark_rows
        from ferbench.report.benchmarks import export as export_rows

        exported = benchmark_rows(boards, frame)
        rows = export_rows(exported, export)
        console.print(
            f"[green]wrote[/] {export} ({len(rows)} rows) and {export.with_suffix('.md')}"
        )
        names = {r for row in exported["runs"] for r in row.split(";")}
        kept = keep_records(runs, names, records)
        if kept:
            console.print(f"[green]kept[/] {kept} run record(s) in {records}")
        refresh_readme_table(readme, export)


def _paired(paths: list[Path], records: Path, out: Path | None) -> None:
    """Print (and with --out, write as paired.json) the paired comparison of two runs."""
    from ferbench.report.stats import BOOTSTRAP_SAMPLES, interval_text
    from ferbench.train.paired import paired_comparison
    from ferbench.utils.fileio import write_json

    if len(paths) != 2:
        raise typer.BadParameter("--paired compares exactly two runs: RUN_A RUN_B")
    a, b, result = paired_comparison(paths[0], paths[1], records)
    table = Table(title=f"paired on the same {result.faces:,} test faces", header_style="bold")
    for column in ("run", "test acc %", "95% CI (Wilson)", "right where the other is wrong"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for verdicts, accuracy, interval, only in (
        (a, result.accuracy_a, result.interval_a, result.only_a),
        (b, result.accuracy_b, result.interval_b, result.only_b),
    ):
        table.add_row(
            escape(verdicts.name),
            f"{accuracy * 100:.2f}",
            interval_text(*interval, digits=2),
            f"{only:,}",
        )
    console.print(table)
    low, high = result.difference_interval
    verdict = "the interval excludes 0" if low > 0 or high < 0 else "the interval includes 0"
    console.print(
        f"A − B: [bold]{result.difference * 100:+.2f}[/] points, 95% CI "
        f"{low * 100:+.2f} to {high * 100:+.2f} (paired bootstrap over the test faces, "
        f"{BOOTSTRAP_SAMPLES:,} resamples; {verdict})"
    )
    console.print(
        f"McNemar's exact test: {result.only_a:,} faces only A gets right, {result.only_b:,} "
        f"only B: p = [bold]{result.p_value:.3g}[/]"
    )
    if out:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "paired.json", {"a": a.name, "b": b.name, **result.as_dict()})
        console.print(f"[green]wrote[/] {out / 'paired.json'}")


def _default_target(runs) -> float:
    for run in runs:
        value = run.config.get("eval", {}).get("target_acc")
        if value is not None:
            return float(value)
    return 0.65
