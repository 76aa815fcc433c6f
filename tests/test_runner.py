from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import empty_folder
from typer.testing import CliRunner

from ferbench.cli import app
from ferbench.data import load_dataset
from ferbench.report.metrics import expected_calibration_error
from ferbench.runs import OUTPUT_FILES, RunDir
from ferbench.train import experiment
from ferbench.train.fit import Reporter
from ferbench.train.runner import execute_trial

runner = CliRunner()


RUN_FILES = [name for name in OUTPUT_FILES if name != "error.txt"]


def tiny_experiment(tmp_path: Path, **train) -> Path:
    spec = {
        "name": "tiny",
        "data": {"kind": "synthetic", "n_per_class": 12, "size": 16},
        "models": [{"name": "cnn5", "input_size": 16}],
        "train": {
            "epochs": 2,
            "batch_size": 16,
            "optimizer": "adam",
            "lr": 1e-3,
            "seed": [0, 1],
            **train,
        },
        "eval": {"speed": False},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_grid_writes_every_file_then_skips(tmp_path):
    file = tiny_experiment(tmp_path)
    results = tmp_path / "results"
    first = runner.invoke(app, ["run", str(file), "--results", str(results)])
    assert first.exit_code == 0, first.output
    truth = load_dataset({"kind": "synthetic", "n_per_class": 12, "size": 16}).split("test")[1]
    for seed in (0, 1):
        run_dir = results / "tiny" / "cnn5" / "size=16" / f"seed={seed}"
        for name in RUN_FILES:
            assert (run_dir / name).is_file(), name
        metrics = json.loads((run_dir / "metrics.json").read_text())
        # the figures are those of the test probabilities the run kept, against the truth
        probs = np.load(run_dir / "predictions.npz")["test"]
        confusion = np.array(metrics["confusion"])
        assert confusion.shape == (7, 7) and confusion.sum() == 7 * 2 == len(truth)  # once
        assert metrics["accuracy"] == pytest.approx((probs.argmax(1) == truth).mean())
        assert metrics["accuracy"] == pytest.approx(confusion.trace() / confusion.sum())
        assert metrics["ece"] == pytest.approx(expected_calibration_error(probs, truth))
        phases = metrics["phase_s"]  # where the whole trial's time went
        assert set(phases) == {"setup", "train", "validate", "test", "speed"}
        history = pd.read_csv(run_dir / "history.csv")
        assert len(history) == 2
        # each phase agrees with the epoch timings recorded independently in history.csv
        assert phases["train"] == pytest.approx(history["train_s"].sum(), abs=0.02)
        assert phases["validate"] == pytest.approx(history["eval_s"].sum(), abs=0.02)
        # CPU time, every thread, pauses excluded: what train CPU-minutes are made of
        assert (history["train_cpu_s"] > 0).all()
        assert metrics["train_cpu_s"] == pytest.approx(history["train_cpu_s"].sum())
        # the trial's time is its phases', the epochs' part as history.csv recorded it
        assert metrics["trial_s"] == pytest.approx(sum(phases.values()), abs=0.03)
        epochs_s = phases["train"] + phases["validate"]
        assert epochs_s == pytest.approx(history["elapsed_s"].iloc[-1], abs=0.03)
        assert phases["setup"] > 0 and phases["test"] > 0
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["data_fingerprint"] and config["versions"]["torch"]
    start = time.perf_counter()
    second = runner.invoke(app, ["run", str(file), "--results", str(results)])
    assert second.exit_code == 0
    assert second.output.count("skipped") >= 2
    assert time.perf_counter() - start < 10


def test_resume_matches_an_uninterrupted_run(tmp_path):
    class StopAfterFirstEpoch(Reporter):
        def epoch_done(self, epoch, epochs, row):
            if epoch == 1:
                raise KeyboardInterrupt

    trial = experiment.load(tiny_experiment(tmp_path, epochs=3, seed=0))[0]
    with pytest.raises(KeyboardInterrupt):
        execute_trial(trial, tmp_path / "a", reporter=StopAfterFirstEpoch())
    resumed = execute_trial(trial, tmp_path / "a")
    straight = execute_trial(trial, tmp_path / "b")
    assert resumed.status == straight.status == "done"
    run_a = tmp_path / "a" / "tiny" / trial.name
    run_b = tmp_path / "b" / "tiny" / trial.name
    assert pd.read_csv(run_a / "history.csv")["epoch"].tolist() == [1, 2, 3]
    weights_a = torch.load(run_a / "last.pt", weights_only=True)["state_dict"]
    weights_b = torch.load(run_b / "last.pt", weights_only=True)["state_dict"]
    assert all(torch.allclose(weights_a[k], weights_b[k], atol=1e-6) for k in weights_a)


def test_sigkill_mid_trial_then_rerun_completes(tmp_path):
    file = tiny_experiment(tmp_path, epochs=12, seed=0)
    results = tmp_path / "results"
    command = [sys.executable, "-m", "ferbench.cli", "run", str(file), "--results", str(results)]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    last = results / "tiny" / "cnn5" / "size=16" / "seed=0" / "last.pt"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert last.exists()
    done_before = torch.load(last, weights_only=True)["epoch"]
    rerun = runner.invoke(
        app, ["run", str(file), "--results", str(results), "--set", "train.epochs=12"]
    )
    assert rerun.exit_code == 0, rerun.output
    assert f"resuming after epoch {done_before}" in rerun.output
    history = pd.read_csv(last.parent / "history.csv")
    assert history["epoch"].tolist() == list(range(1, 13))


def test_failing_trial_is_recorded_and_the_grid_goes_on(tmp_path):
    spec = yaml.safe_load(tiny_experiment(tmp_path, seed=0).read_text())
    spec["data"] = [spec["data"], {"kind": "folder", "path": str(empty_folder(tmp_path))}]
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(spec))
    result = runner.invoke(
        app, ["run", str(tmp_path / "two.yaml"), "--results", str(tmp_path / "r")]
    )
    assert result.exit_code == 1
    assert "1 of 2 trials failed" in result.output
    statuses = [json.loads(p.read_text())["status"] for p in (tmp_path / "r").rglob("status.json")]
    assert sorted(statuses) == ["done", "failed"]
    failed = next(
        p.parent
        for p in (tmp_path / "r").rglob("status.json")
        if json.loads(p.read_text())["status"] == "failed"
    )
    assert "no class folders" in json.loads((failed / "status.json").read_text())["error"]
    assert (failed / "error.txt").exists()


def test_locked_trial_is_left_alone(tmp_path):
    trial = experiment.load(tiny_experiment(tmp_path, seed=0))[0]
    with RunDir(tmp_path / "r" / "tiny" / trial.name).lock() as acquired:
        assert acquired
        assert execute_trial(trial, tmp_path / "r").status == "locked"


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"train": {"epoch": 3}}, "train.epoch: unknown key; did you mean 'epochs'?"),
        ({"models": ["cnn4"]}, "unknown model 'cnn4'; did you mean cnn5"),
        ({"train": {"batch_size": "big"}}, "train.batch_size: expected an integer"),
        ({"train": {"optimizer": "rmsprop"}}, "'rmsprop' is not one of sgd, adam, adamw"),
        ({"data": {"kind": "imagenet"}}, "data.kind: 'imagenet' is not one of"),
        ({"modles": ["cnn3"]}, "modles: unknown key; did you mean 'models'?"),
        ({"eval": {"scales": [1, 1]}}, "eval.scales: expected distinct zooms from 0.5 to 2"),
    ],
)
def test_bad_experiment_files_fail_in_one_line(tmp_path, edit, message):
    spec = {
        "name": "bad",
        "data": {"kind": "synthetic"},
        "models": ["cnn3"],
        "train": {"epochs": 1},
    }
    for key, value in edit.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = runner.invoke(app, ["run", str(path), "--results", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert message in result.output and str(path) in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_dry_run_expands_the_grid(tmp_path):
    file = tiny_experiment(tmp_path, lr=[0.1, 0.01], early_stopping=3)
    results = tmp_path / "r"
    busy = RunDir(results / "tiny" / "cnn5" / "size=16" / "lr=0.1" / "seed=0")
    busy.write_status("running", "cnn5/size=16/lr=0.1/seed=0", "0" * 16)
    with busy.lock() as held:  # another process training that trial
        assert held
        result = runner.invoke(
            app,
            ["run", str(file), "--results", str(results), "--dry-run"],
            env={"COLUMNS": "400"},
        )
    assert result.exit_code == 0
    assert "4 trials" in result.output and "lr=0.01/seed=1" in result.output
    # every setting that differs from its default is shown, not only the usual six
    assert result.output.count("early_stopping=3") == 4
    assert result.output.count(f"left to the process running it (pid {os.getpid()}") == 1
    assert result.output.count("starts") == 3


def test_shipped_experiments_validate():
    root = Path(__file__).resolve().parents[1] / "experiments"
    for file in root.glob("*.yaml"):
        assert experiment.load(file), file
    baseline = experiment.load(root / "baseline.yaml")
    assert {t.model.name for t in baseline} == {"cnn5", "cnn3", "resnet18"}
    assert len(baseline) == 9


def test_parallel_jobs_write_the_same_runs(tmp_path):
    file = tiny_experiment(tmp_path)
    result = runner.invoke(app, ["run", str(file), "--results", str(tmp_path / "r"), "--jobs", "2"])
    assert result.exit_code == 0, result.output
    statuses = [json.loads(p.read_text())["status"] for p in (tmp_path / "r").rglob("status.json")]
    assert statuses == ["done", "done"]
    assert all((p.parent / "best.pt").exists() for p in (tmp_path / "r").rglob("status.json"))


def test_ray_executor_without_ray_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    result = runner.invoke(app, ["run", str(tiny_experiment(tmp_path)), "--executor", "ray"])
    assert result.exit_code == 1
    assert "pip install 'ferbench[ray]'" in result.output


def test_missing_fer2013_fails_before_anything_runs(tmp_path):
    baseline = Path(__file__).resolve().parents[1] / "experiments" / "baseline.yaml"
    result = runner.invoke(
        app,
        [
            "run",
            str(baseline),
            "--results",
            str(tmp_path / "r"),
            "--set",
            f"data.path={tmp_path / 'fer2013.csv'}",
        ],
    )
    assert result.exit_code == 1
    assert "Kaggle" in result.output and "--set data.path=" in result.output
    assert not (tmp_path / "r").exists()


def test_moved_data_is_skipped_and_eval_reproduces_a_tencrop_run(tmp_path):
    """The data is identified by its content: moving and gzipping the CSV re-runs nothing.  And
    `ferbench eval` of the run's checkpoint on its test split gives the run's own accuracy
    (ten-crop TTA and precision taken from the checkpoint)."""
    import gzip
    import shutil

    csv = tmp_path / "a" / "fer2013.csv"
    run_dir = csv_trial(tmp_path, csv, tta="tencrop")
    results = str(tmp_path / "r")
    moved = tmp_path / "b" / "fer2013.csv.gz"
    moved.parent.mkdir()
    with open(csv, "rb") as src, gzip.open(moved, "wb") as dst:
        shutil.copyfileobj(src, dst)
    shutil.rmtree(csv.parent)
    trained_at = (run_dir / "best.pt").stat().st_mtime_ns
    again = runner.invoke(
        app,
        ["run", str(tmp_path / "csv.yaml"), "--results", results, "--set", f"data.path={moved}"],
    )
    assert again.exit_code == 0, again.output
    assert "skipped" in again.output
    assert (run_dir / "best.pt").stat().st_mtime_ns == trained_at
    assert_eval_reproduces(run_dir, moved, "tencrop", "ten-crop")


def test_flip_tta_run_is_reproduced_by_eval(tmp_path):
    """`eval.tta: flip` (the speedrun's cheap TTA): the checkpoint records it, and `ferbench eval`
    takes the same two views, so it reproduces the run's test accuracy."""
    csv = tmp_path / "faces.csv"
    run_dir = csv_trial(tmp_path, csv, tta="flip", epochs=1)
    assert_eval_reproduces(run_dir, csv, "flip", "face and mirror")


def test_a_multi_scale_run_is_reproduced_by_eval(tmp_path):
    """`eval.scales`: the test pass takes its views at each zoom, the checkpoint records the
    zooms, and `ferbench eval` takes them again without being told."""
    import torch

    csv = tmp_path / "faces.csv"
    run_dir = csv_trial(tmp_path, csv, tta="flip", epochs=1, scales=[0.9, 1, 1.1])
    assert json.loads((run_dir / "metrics.json").read_text())["scales"] == [0.9, 1.0, 1.1]
    assert torch.load(run_dir / "best.pt", weights_only=False)["tta_scales"] == [0.9, 1.0, 1.1]
    assert_eval_reproduces(run_dir, csv, "flip", "face and mirror at zooms 0.9/1/1.1")
    single = runner.invoke(
        app, ["eval", str(csv), "--checkpoint", str(run_dir), "--no-tta", "--scales", "1"]
    )
    assert single.exit_code == 0 and "single view," in " ".join(single.output.split())


def csv_trial(tmp_path: Path, csv: Path, tta: str, scales=(1.0,), **train) -> Path:
    """One tiny trial on synthetic faces written as a FER2013 CSV at `csv`; its run folder."""
    synth = ["data", "synth", str(csv), "--n-per-class", "12", "--size", "16", "--format", "csv"]
    assert runner.invoke(app, synth).exit_code == 0
    spec = yaml.safe_load(tiny_experiment(tmp_path, seed=0, **train).read_text())
    spec["data"] = {"kind": "fer2013", "path": str(csv)}
    spec["eval"]["tta"] = tta
    spec["eval"]["scales"] = list(scales)
    (tmp_path / "csv.yaml").write_text(yaml.safe_dump(spec))
    trained = runner.invoke(
        app, ["run", str(tmp_path / "csv.yaml"), "--results", str(tmp_path / "r")]
    )
    assert trained.exit_code == 0, trained.output
    return tmp_path / "r" / "tiny" / "cnn5" / "size=16" / "seed=0"


def assert_eval_reproduces(run_dir: Path, data: Path, tta: str, shown: str) -> None:
    """`ferbench eval` of the run's checkpoint names its test views and gives its accuracy."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["tta"] == tta
    out = run_dir.parent / "eval.json"
    evaluated = runner.invoke(
        app, ["eval", str(data), "--checkpoint", str(run_dir), "--out", str(out)]
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert shown in " ".join(evaluated.output.split())
    assert json.loads(out.read_text())["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-3)


def test_only_runs_the_named_trials(tmp_path):
    """--only picks trials by glob or leading folders; a pattern matching none is one line
    that lists the trial names."""
    file = tiny_experiment(tmp_path, epochs=1)
    results = tmp_path / "results"
    ran = runner.invoke(app, ["run", str(file), "--results", str(results), "--only", "*seed=1"])
    assert ran.exit_code == 0, ran.output
    assert [p.name for p in (results / "tiny" / "cnn5" / "size=16").iterdir()] == ["seed=1"]
    plan = runner.invoke(app, ["run", str(file), "--only", "cnn5/size=16", "--dry-run"])
    assert "2 trials" in plan.output
    wrong = runner.invoke(app, ["run", str(file), "--only", "resnet18"])
    assert wrong.exit_code == 1
    assert "--only resnet18: none of the 2 trials" in wrong.output
    assert "cnn5/size=16/seed=0" in wrong.output
