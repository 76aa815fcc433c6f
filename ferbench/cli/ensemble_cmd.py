"""`ferbench ensemble`: average finished runs' probabilities, chosen on validation only."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ferbench.cli._common import ScalesOption, console, friendly_errors, parse_scales, working


@friendly_errors
def ensemble(
    paths: list[Path] = typer.Argument(
        ...,
        help="Results folders holding the candidate runs, run records "
        "(benchmarks/runs/...: their kept predictions stand in for the checkpoints), or "
        "shipped tags (vggfer_s.fer2013: a shipped model trained on the runs' own faces).",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Run directory to write, e.g. results/ensembles/fer2013."
    ),
    max_members: int = typer.Option(25, "--max-rounds", help="Selection rounds at most."),
    replace: bool = typer.Option(
        False,
        "--replace",
        help="Write over --out when it holds another result (other members, weights, "
        "temperatures or test views); without it, that is refused.",
    ),
    selection: str = typer.Option(
        "greedy",
        "--selection",
        help="greedy: members and weights chosen on the validation log-loss (Caruana et al. "
        "2004); all: every run, equal weights.",
    ),
    scales: ScalesOption = None,
    calibrate: bool = typer.Option(
        False,
        "--calibrate",
        help="Temper each candidate's probabilities first, by the temperature that minimises "
        "its validation log-loss, so that the average weighs members of different confidence "
        "fairly (temperature scaling, Guo et al. 2017; chosen on validation like the rest).",
    ),
) -> None:
    """Ensemble the finished runs under PATHS: members and weights are chosen by greedy forward
    selection on the validation split (or every run, equal weights, with --selection all), and
    the test split is evaluated once, at the end.

    The result is a run directory (metrics.json with its members, per_class.csv, confusion
    matrix, disagreement.csv: how often each pair of members predicts differently on the
    validation faces, since diverse members are what an ensemble gains from), so `ferbench
    compare` lists it next to the single models of the same data. Each candidate's
    probabilities are kept in its run directory (predictions.npz), so running it again with one
    more candidate evaluates only the new one.

    A shipped model joins by its tag, evaluated on the runs' faces with its own test views,
    where its card's data fingerprint says it was trained on those very faces (a model trained
    on other splits may have seen these test faces); its probabilities are cached.

    With --scales each member's own test views are taken again at each zoom (multi-scale test
    views: a face framed a little tighter or looser than the training crops); it costs one
    evaluation per zoom, and the validation accuracy says whether it helps (on FER2013 0.9,1,1.1
    lifted single runs by 0.5 points and the ensemble not at all: README, "Results of record").

    With --calibrate each candidate's probabilities are tempered before they are selected and
    averaged (p^(1/T), renormalised; T fitted on its validation log-loss). Members trained
    with label smoothing and mixup are underconfident, each by its own amount (T 0.75-0.94 on
    FER2013). Untempered, greedy selection dropped the best single run, the worst calibrated;
    tempered, it keeps all seven FER2013 candidates: validation 71.02% against 70.35%,
    PrivateTest 72.72% against 71.91%, ECE 0.039. A distilled student of the ensemble learns
    from the same tempered members.

    Example:
      ferbench ensemble results/fast results/records --out results/ensembles/fer2013
      ferbench ensemble results/members-fer2013 results/speedrun70 --selection all \
        --out results/ensembles/members
      ferbench ensemble results/members-fer2013 --scales 0.9,1,1.1 --out results/ensembles/zooms
      ferbench ensemble results/members-fer2013-long vggfer_s.fer2013 --out results/ensembles/long
      ferbench ensemble results/members-fer2013 --calibrate --out results/ensembles/calibrated
    """
    from ferbench.train.ensemble import build_ensemble

    zooms = parse_scales(scales)
    with working("evaluating candidates") as update:
        metrics = build_ensemble(
            paths, out, max_members, update, selection, replace, zooms, calibrate
        )
    table = Table(title=f"ensemble of {len(metrics['members'])} (of {metrics['candidates']})")
    for column in ("member", "weight", "T", "val acc", "test acc", "disagrees (val)"):
        table.add_column(column, justify="left" if column == "member" else "right")
    for m in metrics["members"]:
        disagrees = m["val_disagreement"]  # None for a lone member
        table.add_row(
            escape(m["run"]),
            f"{m['weight']:.2f}",
            f"{m['temperature']:.2f}",
            f"{m['val_acc']:.4f}",
            f"{m['test_acc']:.4f}",
            "-" if disagrees is None else f"{disagrees:.1%}",
        )
    console.print(table)
    console.print(
        f"test views: {metrics['tta']}; validation {metrics['best_val_acc']:.4f} (held out: "
        f"chosen on one half, scored on the other), "
        f"{metrics['best_val_acc_in_sample']:.4f} in-sample (the faces that chose it); "
        f"test [bold]{metrics['accuracy']:.4f}[/] (evaluated once); wrote {escape(str(out))}"
    )
