"""Run a grid on Ray: one task per trial, results written to the (shared) results folder.

Each task calls the same ``execute_trial`` as a local run, so a re-run skips finished trials and a
task retried after its worker died resumes from ``last.pt``.  The results folder must be
reachable from every node (the local disk for a one-machine cluster, NFS or similar otherwise).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from ferbench.config import Trial
from ferbench.errors import FerbenchError
from ferbench.train.runner import Outcome, execute_trial

MAX_RETRIES = 3


def _import_ray():
    try:
        import ray
    except ImportError:
        raise FerbenchError("--executor ray needs Ray: pip install 'ferbench[ray]'") from None
    return ray


def _run_one(trial: Trial, results: str, device: str, fresh: bool, threads: int) -> Outcome:
    import torch

    torch.set_num_threads(max(1, threads))
    return execute_trial(trial, Path(results), device, fresh)


def run_on_ray(
    trials: list[Trial],
    results: Path,
    device: str,
    fresh: bool,
    address: str | None,
    gpus_per_trial: float,
    cpus_per_trial: float,
    console: Console,
) -> list[Outcome]:
    ray = _import_ray()
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise FerbenchError(
                f"cannot reach the Ray cluster at {address or 'a new local instance'}: "
                f"{str(exc).splitlines()[0]}"
            ) from None
    if gpus_per_trial > 0 and device == "auto":
        device = "cuda"
    elif gpus_per_trial == 0 and device == "auto":
        device = "cpu"  # a CPU-only task must not grab a GPU it was not given
    task = ray.remote(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial, max_retries=MAX_RETRIES)(
        _run_one
    )
    results = Path(results).resolve()
    pending = {
        task.remote(t, str(results), device, fresh, int(max(1, cpus_per_trial))): t for t in trials
    }
    outcomes: dict[str, Outcome] = {}
    with Progress(console=console) as progress:
        bar = progress.add_task(
            f"trials on Ray ({cpus_per_trial:g} CPU, {gpus_per_trial:g} GPU each)",
            total=len(trials),
        )
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            trial = pending.pop(ref)
            try:
                outcome = ray.get(ref)
            except Exception as exc:  # retries exhausted: the worker kept dying
                outcome = Outcome(
                    trial.name,
                    "failed",
                    str(results / trial.experiment / trial.name),
                    error=f"Ray task failed after {MAX_RETRIES} retries: "
                    f"{str(exc).splitlines()[0][:200]}",
                )
            outcomes[trial.name] = outcome
            progress.update(bar, advance=1)
            progress.console.print(f"{trial.name}: {outcome.status}")
    return [outcomes[t.name] for t in trials]
