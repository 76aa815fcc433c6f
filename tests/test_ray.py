from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from ferbench.train import experiment
from ferbench.train.executors import run_grid

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def grid_file(tmp_path: Path, epochs: int = 2) -> Path:
    spec = {
        "name": "raygrid",
        "data": {"kind": "synthetic", "n_per_class": 10, "size": 16},
        "models": [{"name": "cnn5", "input_size": 16}],
        "train": {
            "epochs": epochs,
            "batch_size": 16,
            "optimizer": "adam",
            "lr": [1e-3, 1e-4],
            "seed": [0, 1],
        },
        "eval": {"speed": False},
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def files_of(root: Path) -> set[str]:
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def test_ray_grid_matches_local_and_reruns_skip(tmp_path, ray_instance):
    trials = experiment.load(grid_file(tmp_path))
    console = Console(file=open(os.devnull, "w"))
    outcomes = run_grid(trials, tmp_path / "ray", executor="ray", cpus_per_trial=1, console=console)
    assert [o.status for o in outcomes] == ["done"] * 4
    run_grid(trials, tmp_path / "local", console=console)
    assert files_of(tmp_path / "ray") == files_of(tmp_path / "local")
    again = run_grid(trials, tmp_path / "ray", executor="ray", console=console)
    assert [o.status for o in again] == ["skipped"] * 4


def test_killed_worker_is_retried_and_the_grid_completes(tmp_path, ray_instance):
    trials = experiment.load(grid_file(tmp_path, epochs=30))[:1]
    run_dir = tmp_path / "r" / "raygrid" / trials[0].name
    killed = []

    def kill_worker_once():
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                status = json.loads((run_dir / "status.json").read_text())
            except (OSError, ValueError):
                status = {}
            if status.get("status") == "running" and (run_dir / "last.pt").exists():
                os.kill(status["pid"], signal.SIGKILL)
                killed.append(status["pid"])
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_worker_once)
    killer.start()
    outcomes = run_grid(
        trials, tmp_path / "r", executor="ray", console=Console(file=open(os.devnull, "w"))
    )
    killer.join()
    assert killed, "the worker was never seen running"
    assert outcomes[0].status == "done"
    assert json.loads((run_dir / "status.json").read_text())["pid"] != killed[0]
