"""`ferbench run`: train and evaluate every trial of an experiment grid."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ferbench.cli._common import (
    ResultsOption,
    TrainDeviceOption,
    console,
    err_console,
    friendly_errors,
)


@friendly_errors
def run(
    file: Path = typer.Argument(..., help="Experiment YAML, e.g. experiments/quickstart.yaml."),
    results: ResultsOption = Path("results"),
    overrides: list[str] = typer.Option(
        [], "--set", "-s", help="Override a setting: --set train.epochs=1 (repeatable)."
    ),
    only: list[str] = typer.Option(
        [],
        "--only",
        help="Run only the trials whose name matches (a glob, or the name's leading folders: "
        "--only vggfer_s/size=56); repeatable.  The others are left as they are.",
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Print the expanded trials, where each runs and whether it starts, resumes or is "
        "skipped (and why), then stop.",
    ),
    fresh: bool = typer.Option(
        False,
        "--fresh",
        help="Delete each trial's earlier result in its folder and train it from scratch (the "
        "only way ferbench deletes a result).",
    ),
    records: Path = typer.Option(
        Path("benchmarks/runs"),
        "--records",
        help="Run records kept by `compare --export` (perhaps on another machine): a trial "
        "recorded there as finished with the same settings and data, and absent from "
        "--results, is skipped (--fresh trains it here).  A missing folder: none.",
    ),
    device: TrainDeviceOption = "auto",
    deterministic: bool = typer.Option(False, "--deterministic", help="Deterministic algorithms."),
    jobs: int = typer.Option(
        1, "--jobs", "-j", help="Trials in parallel processes (local executor)."
    ),
    executor: str = typer.Option("local", "--executor", help="local or ray."),
    address: str = typer.Option(None, "--address", help="Ray cluster: auto or ray://host:port."),
    gpus_per_trial: float = typer.Option(0.0, "--gpus-per-trial", help="Ray: GPUs per trial."),
    cpus_per_trial: float = typer.Option(1.0, "--cpus-per-trial", help="Ray: CPUs per trial."),
) -> None:
    """Train and evaluate every trial of a YAML experiment grid.

    Finished trials are skipped (so are those finished on another machine, whose run records
    `compare --export` kept in benchmarks/runs/), interrupted ones resume from last.pt, failed
    ones are recorded in their run directory while the grid goes on.  A result is never deleted
    by a changed setting or data file: the changed trial runs beside it, in `<trial>~<hash>`,
    and compare shows both.  Only --fresh deletes.

    Beyond the usual settings, train: takes the efficiency levers ema: 0.98 (the averaged
    weights are validated, saved and shipped), norm_bias_lr, dirac_init and
    augment: {alternate_flip: true}, batch mixing with augment: {mixup: 0.4, cutmix: 1.0}
    (targets mixed by the same share), and distillation from a run, an ensemble, a checkpoint
    or a shipped tag with distill: {teacher: PATH_OR_TAG, alpha: 0.5, temperature: 1} (loss
    (1-alpha) CE + alpha T^2 KL(teacher || student); the teacher's probabilities on the
    training faces are computed once and cached, or with views: student the teacher sees each
    augmented batch as the student does).  targets: votes trains on each face's
    normalised annotator votes (FER+) instead of its label.  eval: {tta: tencrop, scales: [0.9,
    1, 1.1]} tests with ten-crop views at three zooms (validation stays at one).  README:
    "ferbench run".

    Examples:
      ferbench run experiments/quickstart.yaml
      ferbench run experiments/baseline.yaml --set data.path=~/data/fer2013.csv --dry-run
      ferbench run experiments/baseline.yaml --set train.epochs=1 --device cuda
      ferbench run experiments/speedrun.yaml --set data.path=fer2013.csv.gz --set train.ema=0
      ferbench run student.yaml --set train.distill.teacher=results/ensembles/members
      ferbench run experiments/members-fer2013-sizes.yaml --only vggfer_s/size=56 --dry-run
    """
    from ferbench.train import experiment
    from ferbench.train.executors import run_grid

    if deterministic:
        overrides = [*overrides, "train.deterministic=true"]
    trials = experiment.select_trials(experiment.load(file, overrides), only, file)
    experiment.check_data_paths(trials)  # a wrong FER2013 path fails now, not in every trial
    experiment.check_teachers(trials)
    if executor == "local":
        from ferbench.device import select_device

        select_device(device)  # likewise --device cuda on a machine without one
    recorded = {} if fresh else recorded_trials(trials, results, records)
    if dry_run:
        print_plan(trials, file, results, fresh, recorded)
        return
    to_run = [t for t in trials if t.name not in recorded]
    outcomes = (
        run_grid(
            to_run,
            results,
            device=device,
            fresh=fresh,
            jobs=jobs,
            executor=executor,
            address=address,
            gpus_per_trial=gpus_per_trial,
            cpus_per_trial=cpus_per_trial,
            console=console,
        )
        if to_run
        else []
    )
    done = {o.name: o for o in outcomes} | {
        name: _recorded(name, r) for name, r in recorded.items()
    }
    outcomes = [done[t.name] for t in trials]
    print_summary(outcomes)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        err_console.print(
            f"[bold red]{len(failed)} of {len(outcomes)} trials failed[/] "
            "(see error.txt in each run directory)"
        )
        raise typer.Exit(1)


def recorded_trials(trials, results: Path, records: Path) -> dict:
    """{trial name: its record} for the trials that finished elsewhere (runner's
    `recorded_elsewhere`); none when there is no records folder."""
    from ferbench.train.runner import recorded_elsewhere

    if not records.is_dir():
        return {}
    found = {t.name: recorded_elsewhere(t, results, records) for t in trials}
    return {name: record for name, record in found.items() if record is not None}


def _recorded(name: str, record):
    from ferbench.train.runner import Outcome

    metrics = record.metrics()
    return Outcome(
        name,
        "skipped",
        str(record.path),
        test_acc=metrics.get("accuracy"),
        val_acc=metrics.get("best_val_acc"),
        error="finished elsewhere, its record counts (--only it with --fresh: trained here)",
    )


def print_plan(trials, file: Path, results: Path, fresh: bool, recorded: dict) -> None:
    """The expanded grid: each trial's run folder and what running it would do."""
    from ferbench.train import experiment
    from ferbench.train.runner import place_trial

    table = Table(title=f"{len(trials)} trials in {file}", header_style="bold")
    for column in ("run directory", "model", "size", "classes", "data", "settings", "plan"):
        table.add_column(column)
    reasons = []
    for trial in trials:
        placement = place_trial(trial, results, fresh)
        if placement.reason:
            reasons.append(f"{trial.name}: {placement.reason}")
        table.add_row(
            escape(str(placement.run.path.relative_to(results))),
            trial.model.name,
            str(trial.model.input_size),
            ",".join(trial.data.classes or []) or "all",
            str(trial.data.path or trial.data.kind),
            experiment.trial_name_summary(trial),
            "deletes its result, starts over"
            if fresh
            else f"skipped (recorded in {recorded[trial.name].path})"
            if trial.name in recorded
            else placement.plan,
        )
    console.print(table)
    for line in reasons:
        console.print(escape(line), soft_wrap=True)


def print_summary(outcomes) -> None:
    table = Table(title="summary", header_style="bold")
    for column in ("trial", "status", "best val acc", "test acc", "seconds", "note"):
        table.add_column(
            column, justify="right" if column in ("best val acc", "test acc", "seconds") else "left"
        )
    colours = {"done": "green", "skipped": "dim", "failed": "red", "locked": "yellow"}
    for o in outcomes:
        table.add_row(
            o.name,
            f"[{colours.get(o.status, 'white')}]{o.status}[/]",
            f"{o.val_acc:.3f}" if o.val_acc is not None else "-",
            f"{o.test_acc:.3f}" if o.test_acc is not None else "-",
            f"{o.seconds:.1f}",
            escape(o.error),
        )
    console.print(table)
