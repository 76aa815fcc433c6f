"""Run trials into run directories: skip what is finished, resume what was interrupted,
record what failed, never let two processes write one trial (the layout is ``runs.RunDir``'s).

A finished trial is skipped when its config hash (settings that change the result) and its data
fingerprint (the content of the faces, wherever the file lives) are both unchanged.  A result is
never deleted by a change: a trial whose folder holds other settings or data runs beside it
(:func:`place_trial`); only ``--fresh`` clears a folder.
"""

from __future__ import annotations

import hashlib
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from ferbench.config import Trial, changed_settings
from ferbench.runs import RunDir
from ferbench.train.fit import Reporter, fit, trial_data
from ferbench.utils.fileio import write_text


@dataclass
class Outcome:
    name: str
    status: str  # done, skipped, failed, locked
    run_dir: str
    seconds: float = 0.0
    test_acc: float | None = None
    val_acc: float | None = None
    error: str = ""


@dataclass(frozen=True)
class Placement:
    """Where a trial runs, and why there: its own folder unless that one holds a result of
    other settings or other data, which is never touched (the trial then runs beside it, in
    ``<name>~<hash>``)."""

    run: RunDir
    reason: str = ""  # empty when the trial runs in its own folder

    @property
    def plan(self) -> str:
        """What running the trial will do: skip, leave it to the process running it, resume
        or start."""
        run = self.run
        if run.finished:
            return "skipped (finished)"
        if run.state == "running":
            pid = run.status().get("pid")
            return f"left to the process running it (pid {pid}; {run.progress()})"
        if run.last_checkpoint.exists():
            try:
                return f"resumes after epoch {int(run.history()['epoch'].iloc[-1])}"
            except (OSError, ValueError, IndexError, KeyError):
                return "resumes from last.pt"
        return "starts"


def place_trial(trial: Trial, results: Path, fresh: bool = False) -> Placement:
    """The run folder of `trial` under `results`.  Its own (``<experiment>/<name>``) when that
    is empty, holds the same settings and data, or `fresh` asks to redo it there; otherwise a
    sibling named with a short hash of the trial's settings and data, so both results stay."""
    home = RunDir(Path(results) / trial.experiment / trial.name)
    if fresh or home.empty or not home.file("config.yaml").exists():  # nothing trained there
        return Placement(home)
    changes = changed_settings(home.config(), trial.to_dict())
    fingerprint = trial_data(trial).fingerprint()
    if not changes and home.settings_hash() == trial.config_hash():
        if home.data_fingerprint in (None, fingerprint):
            return Placement(home)
        changes = ["the data changed (other faces or labels)"]
    elif not changes:
        changes = ["settings changed"]
    digest = hashlib.sha256(f"{trial.config_hash()}:{fingerprint}".encode()).hexdigest()[:8]
    variant = RunDir(home.path.with_name(f"{home.path.name}~{digest}"))
    return Placement(
        variant,
        f"{home.path.name} holds another run ({'; '.join(changes)}), kept; "
        f"this one runs in {variant.path.name}",
    )


def recorded_elsewhere(trial: Trial, results: Path, records: Path) -> RunDir | None:
    """The record of `trial` (``<records>/<experiment>/<name>``, kept by `compare --export`)
    when it finished on another machine or in another sitting with the same settings and data,
    and nothing of it is under `results` here: training it again would only repeat it."""
    record = RunDir(Path(records) / trial.experiment / trial.name)
    if record.status().get("status") != "done" or not record.file("metrics.json").is_file():
        return None
    if not RunDir(Path(results) / trial.experiment / trial.name).empty:
        return None  # a run here: skipped, resumed or placed beside as always
    if record.settings_hash() != trial.config_hash():
        return None
    if record.data_fingerprint not in (None, trial_data(trial).fingerprint()):
        return None
    return record


def execute_trial(
    trial: Trial,
    results: Path,
    device: str = "auto",
    fresh: bool = False,
    reporter: Reporter | None = None,
) -> Outcome:
    """Run one trial unless it is finished; never raises for trial errors and never deletes a
    result unless `fresh` asks to (see :func:`place_trial`)."""
    reporter = reporter or Reporter()
    start = time.perf_counter()
    try:
        placement = place_trial(trial, results, fresh)
    except Exception as exc:  # the data failed to load: recorded in the trial's own folder
        placement = Placement(RunDir(Path(results) / trial.experiment / trial.name))
        if placement.run.empty:
            return _failed(trial, placement.run, exc, start)
        return Outcome(trial.name, "failed", str(placement.run.path), error=_one_line(exc))
    run = placement.run
    if placement.reason:
        reporter.note(f"{trial.name}: {placement.reason}")
    with run.lock() as acquired:
        if not acquired:
            return Outcome(
                trial.name, "locked", str(run.path), error="another process is running it"
            )
        status = run.status()
        try:
            if fresh:
                run.clear()
            elif status.get("status") == "done" and run.best_checkpoint.exists():
                metrics = run.metrics()
                return Outcome(
                    trial.name,
                    "skipped",
                    str(run.path),
                    test_acc=metrics.get("accuracy"),
                    val_acc=metrics.get("best_val_acc"),
                )
            run.file("error.txt").unlink(missing_ok=True)
            resumable = {trial.config_hash(), status.get("config_hash")} - {None}
            metrics = fit(trial, run, device, reporter, resumable)
        except KeyboardInterrupt:
            run.write_status("interrupted", trial.name, trial.config_hash())
            raise
        except Exception as exc:  # any failure is recorded and the grid goes on
            return _failed(trial, run, exc, start)
    return Outcome(
        trial.name,
        "done",
        str(run.path),
        time.perf_counter() - start,
        test_acc=metrics["accuracy"],
        val_acc=metrics["best_val_acc"],
    )


def _failed(trial: Trial, run: RunDir, exc: Exception, start: float) -> Outcome:
    message = _one_line(exc)
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        message = f"out of GPU memory ({message}); lower batch_size"
    run.path.mkdir(parents=True, exist_ok=True)
    write_text(run.file("error.txt"), traceback.format_exc())
    run.write_status("failed", trial.name, trial.config_hash(), error=message)
    return Outcome(trial.name, "failed", str(run.path), time.perf_counter() - start, error=message)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def default_threads(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(jobs, 1))
