"""Run records: what a finished trial measured, kept in git beside the benchmark CSVs.

Run directories live in results/, which git ignores and a new machine does not have, so seeds
trained in different sittings would not add up: exporting seeds 1 and 2 on a fresh machine would
shrink a 1-seed row to 2 seeds instead of growing it to 3.  A record is a finished run's text
files (its resolved config, status, metrics, history, per-class table; no weights, a few KB)
and its validation and test probabilities (``predictions*.npz``: the training's, or an ensemble's),
copied by `compare --export` to ``benchmarks/runs/<experiment>/<trial>/``: enough to count the
trial in a row and to ensemble it again without its checkpoint.  An export then counts
the records of the experiments it exports whose run directories are not here (or not finished
here); a run directory on disk always wins over its record.
"""

from __future__ import annotations

from pathlib import Path

from ferbench.report.leaderboard import Run, collect_runs
from ferbench.runs import trial_key
from ferbench.utils.fileio import atomic_path

RECORD_FILES = (
    "config.yaml",
    "status.json",
    "metrics.json",
    "history.csv",
    "per_class.csv",
    "confusion.csv",
)


def records_folder(export_csv: Path) -> Path:
    """Where the records of a benchmark CSV's rows live: ``runs/`` beside it."""
    return Path(export_csv).parent / "runs"


def _key(run: Run) -> tuple[str, str]:
    return trial_key(run.config, run.path.name)


def with_records(runs: list[Run], folder: Path) -> tuple[list[Run], list[Run]]:
    """`runs` plus the finished records, under `folder`, of the same experiments whose trial has
    no finished run directory among `runs`; also returns the records it added."""
    finished = {_key(r) for r in runs if r.status == "done"}
    experiments = sorted({_key(r)[0] for r in runs} - {""})
    recalled = []
    for experiment in experiments:
        root = folder / experiment
        if not root.is_dir():
            continue
        for record in collect_runs([root]):
            if record.status == "done" and _key(record) not in finished:
                record.path = folder / record.path  # the row's `runs` says where it came from
                recalled.append(record)
    return runs + recalled, recalled


def keep_records(runs: list[Run], names: set[str], folder: Path) -> int:
    """Copy the record of every finished run named in `names` (a row's `runs`) that is a run
    directory, not itself a record, into `folder`; returns how many were written or refreshed."""
    written = 0
    for run in runs:
        if run.status != "done" or str(run.path) not in names or run.directory is None:
            continue
        if run.directory.resolve().is_relative_to(folder.resolve()):
            continue
        experiment, trial = _key(run)
        target = folder / (experiment or "unnamed") / trial
        predictions = sorted(p.name for p in run.directory.glob("predictions*.npz"))
        for stale in target.glob("predictions*.npz"):  # made by a checkpoint since replaced
            if stale.name not in predictions:
                stale.unlink()
        for name in (*RECORD_FILES, *predictions):
            source = run.directory / name
            if source.is_file():
                with atomic_path(target / name) as tmp:
                    tmp.write_bytes(source.read_bytes())
        written += 1
    return written
