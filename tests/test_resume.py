"""Nothing lost, nothing guessed: a changed setting or data file never deletes a finished result,
and a run killed anywhere resumes to exactly the uninterrupted run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from helpers import noise_faces
from typer.testing import CliRunner

from ferbench.cli import app
from ferbench.runs import RunDir
from ferbench.train import experiment
from ferbench.train import fit as fit_module
from ferbench.train.fit import Reporter
from ferbench.train.runner import execute_trial

cli = CliRunner()
TIMING = ["train_s", "eval_s", "elapsed_s", "train_images_per_s", "train_cpu_s"]


def write_experiment(tmp_path: Path, data: dict | None = None, **train) -> Path:
    spec = {
        "name": "keep",
        "data": data or {"kind": "synthetic", "n_per_class": 10, "size": 16},
        "models": [{"name": "cnn5", "input_size": 16}],
        "train": {
            "epochs": 1,
            "batch_size": 16,
            "optimizer": "adam",
            "lr": 1e-3,
            "seed": 0,
            **train,
        },
        "eval": {"speed": False},
    }
    path = tmp_path / "keep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(file: Path, results: Path, *args: str):
    result = cli.invoke(
        app, ["run", str(file), "--results", str(results), *args], env={"COLUMNS": "400"}
    )
    assert result.exit_code == 0, result.output
    return result


def test_changed_setting_runs_beside_the_finished_result(tmp_path):
    file, results = write_experiment(tmp_path), tmp_path / "r"
    run(file, results)
    home = results / "keep" / "cnn5" / "size=16" / "seed=0"
    kept = {name: sha256(home / name) for name in ("best.pt", "metrics.json", "history.csv")}

    plan = run(file, results, "--set", "train.epochs=2", "--dry-run")
    assert "train.epochs 1 -> 2" in plan.output and "starts" in plan.output
    run(file, results, "--set", "train.epochs=2")
    assert {name: sha256(home / name) for name in kept} == kept  # byte-identical
    (variant,) = home.parent.glob("seed=0~*")
    assert len(pd.read_csv(variant / "history.csv")) == 2
    assert json.loads((variant / "status.json").read_text())["status"] == "done"
    # both settings are finished now: running either again skips it
    assert "skipped" in run(file, results, "--set", "train.epochs=2").output
    assert "skipped" in run(file, results).output
    assert {name: sha256(home / name) for name in kept} == kept
    compare = cli.invoke(app, ["compare", str(results), "--out", str(tmp_path / "c")])
    assert compare.exit_code == 0, compare.output
    rows = pd.read_csv(tmp_path / "c" / "comparison.csv")
    assert len(rows) == 2
    # only --fresh deletes: the trial trains again (a new best.pt; the same figures: seeded)
    written = (home / "best.pt").stat().st_mtime_ns
    accuracy = json.loads((home / "metrics.json").read_text())["accuracy"]
    fresh = run(file, results, "--fresh")
    assert "skipped" not in fresh.output and (home / "best.pt").stat().st_mtime_ns > written
    assert json.loads((home / "metrics.json").read_text())["accuracy"] == accuracy


def test_changed_data_runs_beside_the_finished_result(tmp_path):
    faces = noise_faces(tmp_path / "faces", ("happy", "sad"), 12, side=16)
    file = write_experiment(tmp_path, data={"kind": "folder", "path": str(faces), "size": 16})
    results = tmp_path / "r"
    run(file, results)
    (home,) = {p.parent for p in results.rglob("best.pt")}
    kept = sha256(home / "best.pt")
    noise_faces(faces, ("happy", "sad"), 12, side=16, seed=1)  # same files, other faces
    fit_module._DATA_MEMO.clear()  # a new process would load the faces anew
    plan = run(file, results, "--dry-run")
    assert "the data changed" in plan.output
    run(file, results)
    assert sha256(home / "best.pt") == kept
    assert len(list(home.parent.glob(f"{home.name}~*/best.pt"))) == 1


def test_runtime_keys_and_new_defaults_keep_the_hash(tmp_path):
    base = experiment.load(write_experiment(tmp_path))[0]
    for override in ("train.deterministic=true", "eval.target_acc=0.5", "eval.batch_size=64"):
        (other,) = experiment.load(write_experiment(tmp_path), [override])
        assert other.config_hash() == base.config_hash(), override
    (other,) = experiment.load(write_experiment(tmp_path), ["train.lr=0.01"])
    assert other.config_hash() != base.config_hash()
    # a config.yaml written before an option existed (the key absent) hashes the same
    stored = base.to_dict()
    del stored["train"]["grad_clip"]
    from ferbench.config import config_hash

    assert config_hash(stored) == base.config_hash()


class Kill(Reporter):
    """Stops the process (KeyboardInterrupt, as Ctrl-C or a kill would) at one point: after an
    epoch, at a step of an epoch, or as the best checkpoint's final pass over a split starts
    (`epoch` "test" or "val")."""

    def __init__(self, epoch: int | str, step: int | None = None):
        self.epoch, self.step, self.current = epoch, step, 1

    def trial_started(self, trial, start_epoch, epochs):
        self.current = start_epoch + 1

    def batch(self, step, steps, loss, acc):
        if self.step is not None and self.current == self.epoch and step >= self.step:
            raise KeyboardInterrupt

    def epoch_done(self, epoch, epochs, row):
        self.current = epoch + 1
        if self.step is None and epoch == self.epoch:
            raise KeyboardInterrupt

    def final_pass(self, split):
        if split == self.epoch:
            raise KeyboardInterrupt


def early_stopping_trial(tmp_path: Path):
    file = write_experiment(
        tmp_path,
        data={"kind": "synthetic", "n_per_class": 16, "size": 16},
        epochs=12,
        optimizer="sgd",
        lr=0.01,
        early_stopping=3,
        augment={"crop_padding": 2, "flip": True},
    )
    return experiment.load(file)[0]


def outcome(results: Path, trial) -> tuple:
    run_dir = results / trial.experiment / trial.name
    history = pd.read_csv(run_dir / "history.csv").drop(columns=TIMING)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    best = torch.load(run_dir / "best.pt", weights_only=True)["state_dict"]
    return history, metrics, best


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("straight")
    trial = early_stopping_trial(tmp)
    assert execute_trial(trial, tmp / "r").status == "done"
    history, metrics, best = outcome(tmp / "r", trial)
    assert len(history) < trial.train.epochs  # it did stop early: the case under test
    return history, metrics, best


def kill_points(history_len: int) -> list[tuple[int | str, int | None]]:
    """Inside the early-stopping patience (after and during its epochs), the first epoch, right
    after the stopping epoch, and inside the final evaluation (its test pass done)."""
    last = history_len
    return [(last - 1, None), (last, 2), (1, None), (last, None), ("val", None)]


def test_kill_inside_the_patience_resumes_exactly(tmp_path, straight):
    history, metrics, best = straight
    for epoch, step in kill_points(len(history)):
        results = tmp_path / f"r{epoch}-{step}"
        trial = early_stopping_trial(tmp_path)
        with pytest.raises(KeyboardInterrupt):
            execute_trial(trial, results, reporter=Kill(epoch, step))
        assert RunDir(results / trial.experiment / trial.name).status()["status"] == "interrupted"
        assert execute_trial(trial, results).status == "done"
        got_history, got_metrics, got_best = outcome(results, trial)
        pd.testing.assert_frame_equal(got_history, history)
        assert got_metrics["epochs_run"] == metrics["epochs_run"]
        assert got_metrics["accuracy"] == metrics["accuracy"]
        assert got_metrics["best_epoch"] == metrics["best_epoch"]
        assert all(torch.equal(got_best[k], best[k]) for k in best), (epoch, step)


def test_kill_between_the_checkpoint_and_the_history_resumes_exactly(
    tmp_path, straight, monkeypatch
):
    """last.pt is written before history.csv: a kill between the two re-trains nothing twice
    and leaves no epoch out."""
    history, metrics, _ = straight
    trial = early_stopping_trial(tmp_path)
    write_text = fit_module.write_text
    target = len(history) - 1

    def dies_writing_that_history(path, text):
        if Path(path).name == "history.csv" and text.count("\n") == target + 1:
            raise KeyboardInterrupt
        write_text(path, text)

    monkeypatch.setattr(fit_module, "write_text", dies_writing_that_history)
    with pytest.raises(KeyboardInterrupt):
        execute_trial(trial, tmp_path / "r")
    monkeypatch.setattr(fit_module, "write_text", write_text)
    assert execute_trial(trial, tmp_path / "r").status == "done"
    got_history, got_metrics, _ = outcome(tmp_path / "r", trial)
    pd.testing.assert_frame_equal(got_history, history)
    assert got_metrics["accuracy"] == metrics["accuracy"]
