"""Executors for a grid of trials: in this process, in N local processes, or on Ray.

Trials are independent; each executor calls the same ``execute_trial``, so skip, resume and
failure semantics are identical everywhere.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from rich.console import Console

from ferbench.config import Trial
from ferbench.errors import FerbenchError
from ferbench.train.runner import Outcome, execute_trial


def run_grid(
    trials: list[Trial],
    results: Path,
    device: str = "auto",
    fresh: bool = False,
    jobs: int = 1,
    executor: str = "local",
    address: str | None = None,
    gpus_per_trial: float = 0.0,
    cpus_per_trial: float = 1.0,
    console: Console | None = None,
) -> list[Outcome]:
    console = console or Console()
    if executor == "ray":
        from ferbench.train.ray_executor import run_on_ray

        return run_on_ray(
            trials, results, device, fresh, address, gpus_per_trial, cpus_per_trial, console
        )
    if executor != "local":
        raise FerbenchError(f"unknown executor '{executor}'; use local or ray")
    if jobs > 1:
        return _run_processes(trials, results, device, fresh, jobs, console)
    from ferbench.train.progress import RichReporter

    outcomes = []
    with RichReporter(console, len(trials)) as reporter:
        for trial in trials:
            outcome = execute_trial(trial, results, device, fresh, reporter)
            outcomes.append(outcome)
            reporter.trial_finished(f"{trial.name}: {outcome.status}")
    return outcomes


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run_processes(
    trials: list[Trial], results: Path, device: str, fresh: bool, jobs: int, console: Console
) -> list[Outcome]:
    from rich.progress import Progress

    from ferbench.train.runner import default_threads

    outcomes: dict[str, Outcome] = {}
    context = mp.get_context("spawn")  # never fork a process that holds torch threads
    with (
        ProcessPoolExecutor(
            jobs, mp_context=context, initializer=_worker_init, initargs=(default_threads(jobs),)
        ) as pool,
        Progress(console=console) as progress,
    ):
        task = progress.add_task(f"trials ({jobs} processes)", total=len(trials))
        futures = {pool.submit(execute_trial, t, results, device, fresh): t for t in trials}
        for future in as_completed(futures):
            trial = futures[future]
            try:
                outcome = future.result()
            except Exception as exc:  # the worker process itself died
                outcome = Outcome(
                    trial.name,
                    "failed",
                    str(results / trial.experiment / trial.name),
                    error=f"worker died: {exc}",
                )
            outcomes[trial.name] = outcome
            progress.update(task, advance=1)
            progress.console.print(f"{trial.name}: {outcome.status}")
    return [outcomes[t.name] for t in trials]
