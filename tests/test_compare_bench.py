from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import empty_folder
from typer.testing import CliRunner

import ferbench
from ferbench.cli import app
from ferbench.device import cpu_isa
from ferbench.report.benchmarks import _hardware_text, _machines
from ferbench.report.leaderboard import time_to_target_cell
from ferbench.report.plots import pareto_front
from ferbench.train import experiment
from ferbench.train.fit import Reporter
from ferbench.train.runner import execute_trial

runner = CliRunner()


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """Two small experiments: one over lr x seed, one with a failing dataset."""
    root = tmp_path_factory.mktemp("compare")
    grid = {
        "name": "grid",
        "data": {"kind": "synthetic", "n_per_class": 12, "size": 16},
        "models": [{"name": "cnn5", "input_size": 16}],
        "train": {
            "epochs": 2,
            "batch_size": 16,
            "optimizer": "adam",
            "lr": [1e-3, 1e-4],
            "seed": [0, 1],
        },
        "eval": {"target_acc": 0.2},
    }
    other = {
        "name": "other",
        "data": [
            {"kind": "synthetic", "n_per_class": 12, "size": 16},
            {"kind": "folder", "path": str(empty_folder(root))},
        ],
        "models": [{"name": "cnn5", "input_size": 16}],
        "train": {"epochs": 1, "batch_size": 16, "optimizer": "adam", "lr": 1e-3},
    }
    for spec in (grid, other):
        (root / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec))
        runner.invoke(
            app, ["run", str(root / f"{spec['name']}.yaml"), "--results", str(root / "results")]
        )
    return root / "results"


def test_compare_writes_everything_and_numbers_match(results, tmp_path):
    out = tmp_path / "report"
    result = runner.invoke(app, ["compare", str(results), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in (
        "comparison.csv",
        "comparison.md",
        "report.html",
        "per_class_recall_0.png",
        "confusion_matrices_0.png",
        "training_curves_0.png",
        "accuracy_vs_latency_0.png",
    ):
        assert (out / name).is_file(), name
    table = pd.read_csv(out / "comparison.csv")
    grid_rows = table[table["runs"].str.contains("grid/")]
    assert len(grid_rows) == 2 and set(grid_rows["n"]) == {2}
    for _, row in grid_rows.iterrows():
        accs = [
            json.loads((results.parent / run / "metrics.json").read_text())["accuracy"]
            for run in row["runs"].split(";")
        ]
        assert row["accuracy_mean"] == pytest.approx(np.mean(accs))
        assert row["accuracy_std"] == pytest.approx(np.std(accs, ddof=1))
    assert "failed" in result.output and "no class folders" in (out / "comparison.md").read_text()
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 4
    assert (
        "src='http" not in page and 'src="http' not in page and "<link" not in page
    )  # self-contained


def test_runs_copied_elsewhere_compare_the_same(results, tmp_path):
    copy = tmp_path / "elsewhere" / "results"
    shutil.copytree(results, copy)
    a, b = tmp_path / "a", tmp_path / "b"
    runner.invoke(app, ["compare", str(results), "--out", str(a), "--format", "csv"])
    runner.invoke(app, ["compare", str(copy), "--out", str(b), "--format", "csv"])
    assert (a / "comparison.csv").read_text() == (b / "comparison.csv").read_text()


def test_filter_group_and_metric(results, tmp_path):
    result = runner.invoke(
        app,
        [
            "compare",
            str(results),
            "--out",
            str(tmp_path),
            "--format",
            "csv",
            "--filter",
            "lr=0.001",
            "--metric",
            "macro_f1",
        ],
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "comparison.csv")
    assert not table["runs"].str.contains("lr=0.0001").any()
    bad = runner.invoke(app, ["compare", str(results), "--out", str(tmp_path), "--metric", "speed"])
    assert bad.exit_code == 1 and "unknown metric" in bad.output


def test_time_to_target_says_how_many_runs_got_there():
    assert time_to_target_cell(854.0, 0.0, 2, 2) == "854"
    assert time_to_target_cell(854.0, 0.0, 1, 2) == "854 (1/2 runs)"
    assert time_to_target_cell(float("nan"), float("nan"), 0, 3) == "not reached"
    assert time_to_target_cell(float("nan"), float("nan"), 0, 0) == "-"  # an ensemble: no curve


def test_same_faces_share_a_leaderboard_whether_the_kind_was_named_or_detected():
    """`kind: auto` on fer2013.csv and `kind: fer2013` read the same faces: one leaderboard."""
    from ferbench.report.leaderboard import _data_label

    common = {"class_names": ["angry", "happy"], "data_fingerprint": "96c2fecf00"}
    named = {**common, "data": {"kind": "fer2013"}, "data_source": "fer2013 csv /a/fer2013.csv"}
    detected = {**named, "data": {"kind": "auto"}}
    assert _data_label(named) == _data_label(detected) == "fer2013 (2 classes: ang,hap) #96c2fecf"
    other = {**detected, "data_source": "folder /faces", "data_fingerprint": "0123abcd"}
    assert _data_label(other).startswith("folder (2 classes")


def test_pareto_front():
    latency = np.array([1.0, 2.0, 3.0, 4.0])
    accuracy = np.array([0.5, 0.4, 0.7, 0.6])
    assert pareto_front(latency, accuracy).tolist() == [0, 2]


def test_bench_measures_against_reference(tmp_path):
    out = tmp_path / "bench.csv"
    result = runner.invoke(
        app,
        [
            "bench",
            "--models",
            "cnn5",
            "--device",
            "cpu",
            "--batch-size",
            "16",
            "--steps",
            "2",
            "--jobs",
            "2",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "bound, 2 jobs" in result.output
    row = pd.read_csv(out).iloc[0]
    # two processes stepping at once, one thread each: their total against one trial's
    assert row["jobs"] == 2 and row["jobs_bound_img_s"] > 0
    assert row["jobs_vs_one"] == pytest.approx(row["jobs_bound_img_s"] / row["compute_bound_img_s"])
    for key in (
        "train_img_s",
        "compute_bound_img_s",
        "reference_img_s",
        "inference_img_s",
        "latency_batch1_ms",
        "peak_memory_mb",
    ):
        assert row[key] > 0, key
    # the engine path keeps up with the model's own arithmetic (a loose bound: 2 timed steps)
    assert row["train_img_s"] > 0.3 * row["compute_bound_img_s"]
    assert row["precision"].split(",")[0] in ("bf16", "fp32")


def test_bench_precision_is_chosen_and_checked(tmp_path):
    args = ["bench", "--models", "cnn5", "--device", "cpu", "--no-reference", "--steps", "1"]
    fp32 = runner.invoke(app, [*args, "--amp", "off", "--out", str(tmp_path / "b.csv")])
    assert fp32.exit_code == 0, fp32.output
    assert pd.read_csv(tmp_path / "b.csv").iloc[0]["precision"].startswith("fp32")
    bad = runner.invoke(app, [*args, "--amp", "fp16", "--out", str(tmp_path / "c.csv")])
    assert bad.exit_code == 1 and "fp16 needs a CUDA GPU" in bad.output
    assert not (tmp_path / "c.csv").exists()
    typo = runner.invoke(app, [*args, "--backends", "--checkpoint", str(tmp_path / "nope.pt")])
    assert typo.exit_code == 1 and "is not a checkpoint file" in typo.output
    assert "train img/s" not in typo.output  # refused before any timing


def test_bench_backends_of_a_shipped_model_time_that_model_only(tmp_path):
    out = tmp_path / "b.csv"
    args = ["bench", "--backends", "--checkpoint", "vggfer_s.fer2013", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "train img/s" not in result.output  # no training table for cnn5, cnn3, resnet18
    rows = pd.read_csv(out)
    assert set(rows["model"]) == {"vggfer_s"} and len(rows) == 4
    assert (rows["latency_batch1_ms"] > 0).all()


def test_benchmark_csv_export_merges_and_refreshes_the_readme(results, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        "intro\n<!-- benchmarks:synthetic -->\nold\n<!-- /benchmarks:synthetic -->\nend\n"
    )
    csv = tmp_path / "benchmarks" / "synthetic.csv"
    args = ["compare", str(results / "grid"), "--format", "csv", "--out", str(tmp_path / "r")]
    result = runner.invoke(app, [*args, "--export", str(csv), "--readme", str(readme)])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(csv)
    assert len(rows) == 2 and set(rows["seeds"]) == {2}  # lr=1e-3 and 1e-4, two seeds each
    assert set(rows["selection"]) == {"validation"} and rows["recipe"].iloc[0].endswith(".yaml")
    runs = [r for row in rows["runs"] for r in row.split(";")]
    acc = {r: json.loads((results / r / "metrics.json").read_text())["accuracy"] for r in runs}
    assert rows["test_acc_mean"].sum() == pytest.approx(sum(acc.values()) / 2, abs=2e-6)
    text = readme.read_text()
    for row in rows.itertuples():  # each shown mean rounded once, from the runs' own accuracies
        exact = np.mean([acc[r] for r in row.runs.split(";")])
        assert f"| {exact * 100:.1f} ± " in text
    assert "old" not in text and "| cnn5 |" in text and text.endswith("end\n")
    # exporting again (or another experiment) replaces its own rows and keeps the others
    result = runner.invoke(app, [*args, "--export", str(csv)])
    assert result.exit_code == 0 and len(pd.read_csv(csv)) == 2
    # compared with another recipe, a row keeps its own settings (those its grid varies), so
    # it replaces its earlier export instead of adding a second copy
    args[1] = str(results)
    result = runner.invoke(app, [*args, "--export", str(csv)])
    rows = pd.read_csv(csv)
    assert result.exit_code == 0 and len(rows) == 3, rows[["recipe", "settings"]]
    assert sorted(rows["settings"].fillna("")) == ["", "lr=0.0001", "lr=0.001"]


def test_exported_runs_leave_records_so_seeds_from_other_machines_add_up(results, tmp_path):
    """results/ is not in git: an export keeps each run's record beside the CSV, and a later
    export on a machine that has only some of the seeds still counts the others."""
    csv = tmp_path / "benchmarks" / "results.csv"
    records = tmp_path / "benchmarks" / "runs"
    args = ["--format", "csv", "--out", str(tmp_path / "r"), "--export", str(csv)]
    result = runner.invoke(app, ["compare", str(results / "grid"), *args])
    assert result.exit_code == 0, result.output
    kept = sorted(p.relative_to(records) for p in records.rglob("metrics.json"))
    assert len(kept) == 4 and all(str(p).startswith("grid/cnn5/") for p in kept)
    assert not list(records.rglob("*.pt")) and (records / kept[0].parent / "config.yaml").is_file()
    before = pd.read_csv(csv)

    elsewhere = tmp_path / "new-machine" / "grid"  # a fresh checkout: seed 0 of each lr is gone
    shutil.copytree(results / "grid", elsewhere)
    for seed0 in elsewhere.rglob("seed=0"):
        shutil.rmtree(seed0)
    result = runner.invoke(app, ["compare", str(elsewhere), *args])
    assert result.exit_code == 0, result.output
    assert "counted 2 finished trial(s) from their records" in " ".join(result.output.split())
    after = pd.read_csv(csv)
    assert list(after["seeds"]) == [2, 2]
    assert list(after["test_acc_mean"]) == list(before["test_acc_mean"])
    assert sum(str(records) in r for row in after["runs"] for r in row.split(";")) == 2

    # every run directory here again: the records are not counted twice
    result = runner.invoke(app, ["compare", str(results / "grid"), *args])
    assert "from their records" not in result.output and list(pd.read_csv(csv)["seeds"]) == [2, 2]

    # on a fresh machine `run` does not train the recorded trials again (same settings, data)
    grid = [str(results.parent / "grid.yaml"), "--results", str(tmp_path / "fresh")]
    plan = runner.invoke(app, ["run", *grid, "--records", str(records), "--dry-run"])
    assert plan.exit_code == 0 and " ".join(plan.output.split()).count("skipped (recorded") == 4
    changed = runner.invoke(
        app, ["run", *grid, "--records", str(records), "--dry-run", "--set", "train.epochs=3"]
    )
    assert "recorded" not in changed.output and changed.output.count("starts") == 4
    again = runner.invoke(app, ["run", *grid, "--records", str(records)])
    assert again.exit_code == 0, again.output
    assert " ".join(again.output.split()).count("finished elsewhere") == 4
    assert not (tmp_path / "fresh").exists() or not list((tmp_path / "fresh").rglob("*.pt"))


def test_seeds_from_two_machines_keep_each_machines_bound():
    """A mean of two machines' bounds describes neither: each machine keeps its own, and the
    table pairs them without a pipe that would split its cell."""
    runs = pd.DataFrame(
        {
            "hardware": ["AMD EPYC avx2 x2", "AMD EPYC avx512_bf16 x2", "AMD EPYC avx2 x2"],
            "bound_img_s": [130.0, 767.0, 128.0],
        }
    )
    both = _machines(runs)
    assert both == {
        "hardware": "AMD EPYC avx2 x2; AMD EPYC avx512_bf16 x2",
        "bound_img_s": "129; 767",
    }
    assert _hardware_text(**both) == (
        "AMD EPYC avx2 x2 (B 129 img/s); AMD EPYC avx512_bf16 x2 (B 767 img/s)"
    )
    assert _machines(runs.iloc[[0, 2]]) == {"hardware": "AMD EPYC avx2 x2", "bound_img_s": 129.0}
    unmeasured = _machines(runs.assign(bound_img_s=[130.0, None, 128.0]))
    assert _hardware_text(**unmeasured) == "AMD EPYC avx2 x2 (B 129 img/s); AMD EPYC avx512_bf16 x2"


def test_an_ensemble_is_formed_again_from_run_records_without_checkpoints(results, tmp_path):
    """Members whose run directories are gone (another machine) still ensemble from their
    records' predictions; a trial given twice (directory and record) is one candidate."""
    grid = tmp_path / "results" / "grid"
    shutil.copytree(results / "grid", grid)
    first = runner.invoke(app, ["ensemble", str(grid), "--out", str(tmp_path / "ens")])
    assert first.exit_code == 0, first.output
    csv = tmp_path / "benchmarks" / "results.csv"
    args = ["compare", str(grid), "--format", "csv", "--out", str(tmp_path / "r")]
    assert runner.invoke(app, [*args, "--export", str(csv)]).exit_code == 0
    records = tmp_path / "benchmarks" / "runs" / "grid"
    assert len(list(records.rglob("predictions.npz"))) == 4 and not list(records.rglob("*.pt"))

    again = runner.invoke(app, ["ensemble", str(records), "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    assert again.output.count("of its record") == 4 and f"evaluating {records}" not in again.output
    before, after = (
        json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("ens", "again")
    )
    assert after["accuracy"] == before["accuracy"] and after["candidates"] == 4
    assert all(m["run"].startswith(str(records)) for m in after["members"])
    both = runner.invoke(app, ["ensemble", str(grid), str(records), "--out", str(tmp_path / "b")])
    assert (
        both.exit_code == 0
        and json.loads((tmp_path / "b" / "metrics.json").read_text())["candidates"] == 4
    )
    zoomed = runner.invoke(
        app, ["ensemble", str(records), "--out", str(tmp_path / "z"), "--scales", "0.9,1,1.1"]
    )
    assert zoomed.exit_code == 1 and "a run record without its best.pt" in zoomed.output


def test_a_shipped_model_joins_an_ensemble_of_its_own_data_by_its_tag(
    results, tmp_path, monkeypatch
):
    """`ferbench ensemble FOLDER TAG`: the shipped model is evaluated once on the runs' faces
    (then cached), counts as a member, and can teach from the ensemble; a tag trained on other
    faces, or a path that is neither folder nor tag, is a one-line error."""
    from ferbench.models import pretrained
    from ferbench.models.checkpoint import load_checkpoint
    from ferbench.train.distill import resolve_teacher
    from ferbench.utils.fileio import sha256_file

    grid = results / "grid"
    shipped_run = next(p.parent for p in sorted(grid.rglob("best.pt")))
    weights = tmp_path / "weights"  # one run shipped as `ferbench ship` lays it out
    weights.mkdir()
    shutil.copy(shipped_run / "best.pt", weights / "cnn5.demo.pt")
    payload = load_checkpoint(weights / "cnn5.demo.pt")
    train_time = json.loads((shipped_run / "metrics.json").read_text())["train_time_s"]
    demo = {
        "model": "cnn5",
        "file": "cnn5.demo.pt",
        "sha256": sha256_file(weights / "cnn5.demo.pt"),
        "class_names": payload["class_names"],
        "input_size": payload["preprocess"]["input_size"],
        "model_args": payload["model_args"],
        "dataset": "synthetic",
        "data_fingerprint": payload["data_fingerprint"],
        "metrics": {"train_time_s": train_time, "wall_time_s": train_time},
    }
    index = {"cnn5.demo": demo}
    old = {**demo, "metrics": {}}  # shipped before the index kept the training time
    other = {**demo, "data_fingerprint": "0" * 32}
    index.update({"cnn5.old": old, "cnn5.other": other})
    (weights / "index.json").write_text(json.dumps(index))
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", weights)
    monkeypatch.setattr(pretrained, "INDEX", weights / "index.json")
    pretrained.read_index.cache_clear()
    try:
        args = ["ensemble", str(grid), "cnn5.demo", "--selection", "all"]
        first = runner.invoke(app, [*args, "--out", str(tmp_path / "e1")])
        assert first.exit_code == 0, first.output
        metrics = json.loads((tmp_path / "e1" / "metrics.json").read_text())
        assert metrics["candidates"] == 5 and metrics["members"][-1]["run"] == "cnn5.demo"
        twin = next(m for m in metrics["members"] if m["run"] == str(shipped_run))
        # the fp16 copy of a run classifies the run's faces as the run did
        assert abs(metrics["members"][-1]["test_acc"] - twin["test_acc"]) < 0.05
        runs = [json.loads(p.read_text()) for p in grid.rglob("metrics.json")]
        assert metrics["train_time_s"] == pytest.approx(
            sum(r["train_time_s"] for r in runs) + train_time
        )
        again = runner.invoke(app, [*args, "--out", str(tmp_path / "e2")])
        assert "cnn5.demo: cnn5.demo-predictions.npz of the cache" in again.output
        assert "evaluating cnn5.demo" not in again.output
        teacher = resolve_teacher(str(tmp_path / "e1"))
        assert weights / "cnn5.demo.pt" in [path for path, _, _ in teacher.members]

        unknown = runner.invoke(
            app,
            [
                "ensemble",
                str(grid),
                "cnn5.old",
                "--out",
                str(tmp_path / "e3"),
                "--selection",
                "all",
            ],
        )
        assert unknown.exit_code == 0, unknown.output
        assert json.loads((tmp_path / "e3" / "metrics.json").read_text())["train_time_s"] is None
        csv = tmp_path / "b" / "results.csv"
        board = runner.invoke(
            app,
            ["compare", str(tmp_path / "e3"), "--format", "csv", "--out", str(tmp_path / "c")]
            + ["--export", str(csv)],
        )
        assert board.exit_code == 0, board.output
        (row,) = [
            line for line in csv.with_suffix(".md").read_text().splitlines() if "cnn5.old" in line
        ]
        assert "nan" not in row  # the unknown training time reads "-", not a number

        for wrong, message in (
            ("cnn5.other", "cnn5.other was trained on other faces than the runs"),
            ("cnn5.nothing", "cnn5.nothing: neither a results folder nor a shipped tag"),
        ):
            refused = runner.invoke(
                app, ["ensemble", str(grid), wrong, "--out", str(tmp_path / "x")]
            )
            assert refused.exit_code == 1, refused.output
            lines = refused.output.strip().splitlines()  # before any run is evaluated
            assert message in lines[-1] and len(lines) <= 2, refused.output
        assert not (tmp_path / "x").exists()
    finally:
        pretrained.read_index.cache_clear()


def test_greedy_selection_uses_validation_only():
    from ferbench.train.ensemble import greedy_selection

    labels = np.array([0, 1, 0, 1])
    good = np.eye(2)[labels] * 0.6 + 0.2
    half = np.eye(2)[[0, 1, 1, 0]] * 0.6 + 0.2
    wrong = np.eye(2)[1 - labels] * 0.6 + 0.2
    assert greedy_selection([half, good, wrong], labels) == [0, 1, 0]

    # A sure member, badly wrong on one face, and a hesitant one, less wrong there: the
    # average is still wrong on that face, so accuracy (3 of 4 either way) would keep the first
    # alone; the log-loss of the average is lower than either's, so both are kept.
    def member(p_true: list[float]) -> np.ndarray:
        right = np.array(p_true)
        return np.where(np.eye(2)[labels] == 1, right[:, None], 1 - right[:, None])

    sure, hesitant = member([0.99, 0.99, 0.99, 0.05]), member([0.65, 0.65, 0.65, 0.4])
    assert greedy_selection([sure, hesitant], labels) == [1, 2]


def test_scrambled_test_probabilities_choose_the_same_members(results, tmp_path):
    """The claim at the level of `ferbench ensemble`: with every candidate's kept test
    probabilities replaced (the member that validation ranks last made right on every test
    face, the others wrong), members and weights stay as they were; only the test figure moves."""
    from ferbench.data import load_dataset

    grid = tmp_path / "grid"
    shutil.copytree(results / "grid", grid)

    def build(name: str) -> dict:
        result = runner.invoke(app, ["ensemble", str(grid), "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        return json.loads((tmp_path / name / "metrics.json").read_text())

    before = build("before")
    faces = load_dataset({"kind": "synthetic", "n_per_class": 12, "size": 16})
    (_, val), (_, truth) = faces.split("val"), faces.split("test")
    kept = {path: dict(np.load(path)) for path in grid.rglob("predictions.npz")}
    assert len(kept) == 4
    val_loss = {  # the validation log-loss of each candidate, from its own kept probabilities
        path: -np.log(probs["val"][np.arange(len(val)), val]).mean() for path, probs in kept.items()
    }
    last = max(val_loss, key=val_loss.get)
    eye = np.eye(kept[last]["test"].shape[1])
    for path, probs in kept.items():
        shift = 0 if path == last else 1  # right on every test face, or wrong on every one
        test = eye[(truth + shift) % len(eye)] * 0.99 + 0.01 / len(eye)
        np.savez(path, key=probs["key"], val=probs["val"], test=test)
    after = build("after")

    def chosen(metrics: dict) -> list[tuple]:
        return [(m["run"], m["weight"], m["temperature"]) for m in metrics["members"]]

    assert chosen(after) == chosen(before) and len(chosen(before)) < 4  # a choice was made
    assert after["accuracy"] != before["accuracy"]  # the scrambled probabilities were read


def test_ensemble_refuses_a_folder_held_by_a_running_trial(tmp_path, results):
    """`ensemble --out` naming a run folder while its trial trains there is refused (its lock
    is held), --replace or not; the trial then finishes with its own files."""
    spec = {
        "name": "busy",
        "data": {"kind": "synthetic", "n_per_class": 12, "size": 16},
        "models": [{"name": "cnn5", "input_size": 16}],
        "train": {"epochs": 2, "batch_size": 16, "optimizer": "adam", "lr": 1e-3},
        "eval": {"speed": False},
    }
    (tmp_path / "busy.yaml").write_text(yaml.safe_dump(spec))
    (trial,) = experiment.load(tmp_path / "busy.yaml")
    folder = tmp_path / "r" / trial.experiment / trial.name
    attempts = []

    class EnsembleMidway(Reporter):
        def epoch_done(self, epoch, epochs, row):
            if epoch == 1:
                for extra in ([], ["--replace"]):
                    args = ["ensemble", str(results / "grid"), "--out", str(folder), *extra]
                    attempts.append(runner.invoke(app, args))

    assert execute_trial(trial, tmp_path / "r", reporter=EnsembleMidway()).status == "done"
    for attempt in attempts:
        assert attempt.exit_code == 1, attempt.output
        assert "held by a running trial" in attempt.output and trial.name in attempt.output
    assert len(attempts) == 2
    assert yaml.safe_load((folder / "config.yaml").read_text())["model"]["name"] == "cnn5"
    assert not (folder / "disagreement.csv").exists()
    assert len(pd.read_csv(folder / "history.csv")) == 2


def test_ensemble_is_a_run_directory_that_compare_lists(results, tmp_path):
    out = tmp_path / "ens" / "grid"
    result = runner.invoke(app, ["ensemble", str(results / "grid"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    # Not a terminal (as under nohup): the progress is lines with elapsed seconds, not a spinner.
    assert re.search(r"\[ *\d+\.\ds\] .*grid", result.output), result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["members"] and abs(sum(m["weight"] for m in metrics["members"]) - 1) < 1e-9
    best_single = max(m["val_acc"] for m in metrics["members"])
    # chosen on validation, never worse there in-sample; its reported figure is held out
    assert metrics["best_val_acc_in_sample"] >= best_single
    assert 0 < metrics["best_val_acc"] <= 1 and "2-fold" in metrics["val_acc_method"]
    assert metrics["leaked"] == 0 and metrics["accuracy_clean"] == metrics["accuracy"]
    for name in ("per_class.csv", "confusion.csv", "config.yaml", "status.json"):
        assert (out / name).is_file()
    pairs = pd.read_csv(out / "disagreement.csv", index_col=0)
    assert list(pairs.index) == [m["run"] for m in metrics["members"]] == list(pairs.columns)
    assert (pairs.values.diagonal() == 0).all() and (pairs.values == pairs.values.T).all()
    for i, member in enumerate(metrics["members"]):
        others = [pairs.values[i, j] for j in range(len(pairs)) if j != i]
        expected = sum(others) / len(others) if others else None
        assert member["val_disagreement"] == pytest.approx(expected, abs=1e-4)
    assert "disagrees (val)" in result.output
    listed = runner.invoke(
        app,
        [
            "compare",
            str(results / "grid"),
            str(out.parent),
            "--format",
            "csv,png",  # the curves plot takes an ensemble's validation-only history
            "--out",
            str(tmp_path),
        ],
    )
    assert listed.exit_code == 0 and "ensemble" in listed.output
    exported = runner.invoke(
        app, ["compare", str(out.parent), "--format", "csv,md", "--out", str(tmp_path),
              "--export", str(tmp_path / "results-test.csv")],
    )  # fmt: skip
    assert exported.exit_code == 0, exported.output
    ensemble_line = (tmp_path / "comparison.md").read_text().splitlines()[-1]
    assert ensemble_line.startswith("| ensemble") and "not reached" not in ensemble_line  # no curve
    row = pd.read_csv(tmp_path / "results-test.csv").iloc[0]
    assert row["recipe"] == "ferbench ensemble"
    assert all(m["run"] in row["settings"] for m in metrics["members"])  # the row names them
    table = (tmp_path / "results-test.md").read_text()
    assert "| ECE |" in table and f"| {row['ece_mean']:.3f} |" in table  # calibration shown


def test_disagreement_counts_the_faces_two_members_label_differently():
    from ferbench.train.ensemble import disagreement_matrix

    eye = np.eye(3)
    a = eye[[0, 1, 2, 0]]  # one-hot "probabilities" for four faces
    b = eye[[0, 1, 1, 1]]  # differs from a on the last two faces
    c = eye[[0, 1, 2, 0]]  # agrees with a everywhere
    matrix = disagreement_matrix([a, b, c])
    assert matrix.tolist() == [[0.0, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.0]]


def test_ensemble_reuses_each_members_predictions_until_its_checkpoint_changes(results, tmp_path):
    """A training keeps its probabilities with its test views as it tests (predictions.npz):
    what evaluating its checkpoint for an ensemble gives, under the same key, so a finished
    member (and its record) is a candidate as it is; a changed checkpoint is evaluated again."""
    grid = tmp_path / "grid"
    shutil.copytree(results / "grid", grid)
    from_training = {path: dict(np.load(path)) for path in grid.rglob("predictions.npz")}
    assert len(from_training) == 4
    for path in from_training:  # no TTA here: the test views are validation's, at the best epoch
        metrics = json.loads((path.parent / "metrics.json").read_text())
        assert metrics["val_acc_test_views"] == pytest.approx(metrics["best_val_acc"])
        path.unlink()

    def build(name: str) -> tuple[str, dict]:
        result = runner.invoke(app, ["ensemble", str(grid), "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        return result.output, json.loads((tmp_path / name / "metrics.json").read_text())

    first_output, first = build("first")
    runs = sorted(p.parent for p in grid.rglob("predictions.npz"))
    assert len(runs) == 4 and first_output.count(f"evaluating {grid}") == len(runs)
    for path, kept in from_training.items():
        evaluated = np.load(path)
        assert str(evaluated["key"]) == str(kept["key"])
        for split in ("val", "test"):
            np.testing.assert_allclose(evaluated[split], kept[split], atol=1e-5)
    second_output, second = build("second")
    assert f"evaluating {grid}" not in second_output  # every member read from its file
    assert second_output.count("predictions.npz") == len(runs)
    assert second["accuracy"] == first["accuracy"] and second["members"] == first["members"]
    (runs[0] / "predictions.npz").write_bytes(b"not a zip")  # unreadable: evaluated again
    checkpoint = torch.load(runs[1] / "best.pt", weights_only=False)
    torch.save(checkpoint | {"note": "retrained"}, runs[1] / "best.pt")  # another checkpoint
    third_output, third = build("third")
    assert third_output.count(f"evaluating {grid}") == 2 and third["accuracy"] == first["accuracy"]


def test_ensemble_records_its_own_machine_and_code(results, tmp_path):
    """Members trained by an older ferbench lack the CPU's vector extension in their record;
    the ensemble's record is its own."""
    grid = tmp_path / "grid"
    shutil.copytree(results / "grid", grid)
    for config_path in grid.rglob("config.yaml"):
        config = yaml.safe_load(config_path.read_text())
        config["device"].pop("isa", None)
        config["versions"]["ferbench"] = "0.0.1"
        config_path.write_text(yaml.safe_dump(config))
    out = tmp_path / "ens"
    assert runner.invoke(app, ["ensemble", str(grid), "--out", str(out)]).exit_code == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["device"]["isa"] == cpu_isa()
    assert config["versions"]["ferbench"] == ferbench.__version__


def test_ensemble_of_every_run_with_equal_weights(results, tmp_path):
    out = tmp_path / "all"
    result = runner.invoke(
        app, ["ensemble", str(results / "grid"), "--out", str(out), "--selection", "all"]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    weights = [m["weight"] for m in metrics["members"]]
    assert len(weights) == metrics["candidates"] and len(set(weights)) == 1
    assert metrics["selection"].startswith("every candidate")
    bad = runner.invoke(
        app, ["ensemble", str(results / "grid"), "-o", str(out), "--selection", "x"]
    )
    assert bad.exit_code == 1 and "--selection: 'x' is not one of greedy, all" in bad.output
    again = ["ensemble", str(results / "grid"), "-o", str(out), "--selection", "all"]
    assert runner.invoke(app, again).exit_code == 0  # the same ensemble, written again
    trained = next((results / "grid").rglob("metrics.json")).parent
    before = (trained / "metrics.json").read_text()
    over = runner.invoke(app, ["ensemble", str(results / "grid"), "-o", str(trained)])
    assert over.exit_code == 1 and "holds another result; write to another folder" in over.output
    assert (trained / "metrics.json").read_text() == before  # a training run is never replaced


def test_a_calibrated_ensemble_tempers_each_member_on_validation(results, tmp_path):
    """--calibrate fits each member's temperature on its validation log-loss, averages the
    tempered probabilities, says so in the row, and hands the temperatures to a student."""
    from dataclasses import replace

    from ferbench.data import load_dataset
    from ferbench.infer.calibration import tempered
    from ferbench.report.leaderboard import member_label
    from ferbench.runs import RunDir
    from ferbench.train.distill import resolve_teacher

    out = tmp_path / "calibrated"
    args = ["ensemble", str(results / "grid"), "-o", str(out), "--selection", "all"]
    result = runner.invoke(app, [*args, "--calibrate"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    runs = [RunDir(Path(m["run"])) for m in metrics["members"]]
    labels = load_dataset(runs[0].data_spec()).split("val")[1]
    picked = np.arange(len(labels)), labels

    def log_loss(probs):
        return -np.log(np.clip(probs[picked], 1e-12, None)).mean()

    averaged = 0
    for member, run in zip(metrics["members"], runs):
        probs, t = np.load(run.file("predictions.npz"))["val"], member["temperature"]
        assert t != 1.0  # two epochs on a few faces: never calibrated as it stands
        best = log_loss(tempered(probs, t))  # the minimum, not just better than T = 1
        assert best <= min(log_loss(tempered(probs, f * t)) for f in (1.0, 0.8, 1.25)) + 1e-6
        averaged = averaged + tempered(probs, t) * member["weight"]
    in_sample = (averaged.argmax(1) == labels).mean()
    assert metrics["best_val_acc_in_sample"] == pytest.approx(in_sample)
    plain = runner.invoke(app, args)  # the same members, untempered: another result
    assert plain.exit_code == 1 and "other weights or temperatures" in plain.output
    teacher = resolve_teacher(str(out))
    assert [t for _, _, t in teacher.members] == [m["temperature"] for m in metrics["members"]]
    untempered = [(path, weight, 1.0) for path, weight, _ in teacher.members]
    assert teacher.identity != replace(teacher, members=tuple(untempered)).identity  # own cache
    first = metrics["members"][0]
    assert member_label("r", first) == f"r x{first['weight']:.2f} T{first['temperature']:.2f}"
    assert member_label("r", {"weight": 0.5}) == "r x0.50"  # built before --calibrate existed


def test_a_run_written_before_an_option_existed_groups_with_one_at_its_default():
    """Seeds of one recipe stay one row when a later version writes a new option (at its
    default) into config.yaml and an earlier one did not; a real difference still splits."""
    from ferbench.report.leaderboard import Run, differing_settings, runs_frame, settings_label

    def run(seed: int, data: dict, lr: float = 0.1, evaluation: dict | None = None) -> Run:
        config = {"model": {"name": "cnn5", "input_size": 32}, "data": data,
                  "train": {"seed": seed, "lr": lr}, "eval": evaluation or {}}  # fmt: skip
        return Run(Path(f"r{seed}"), "done", config, {"accuracy": 0.5})

    old = {"kind": "fer2013", "path": "a.csv"}
    new = {**old, "folds": None, "fold": 0, "neutral": "none"}
    assert differing_settings(runs_frame([run(0, old), run(1, new)])) == []
    assert differing_settings(runs_frame([run(0, old), run(1, new, lr=0.2)])) == ["train.lr"]
    one_zoom = run(2, new, evaluation={"scales": [1.0]})  # a list option at its default
    assert differing_settings(runs_frame([run(0, old), one_zoom])) == []
    zooms = runs_frame([run(0, old), run(3, new, evaluation={"scales": [0.9, 1.0, 1.1]})])
    assert differing_settings(zooms) == ["eval.scales"]
    labels = {settings_label(s, ["eval.scales"]) for s in zooms["settings"]}
    assert labels == {"scales=1", "scales=0.9,1,1.1"}
    # another model's argument is no setting of this run: left out, not shown as None
    stride = ["model.args.stem_stride"]
    assert settings_label({"model.args.stem_stride": 2}, stride) == "args.stem_stride=2"
    assert settings_label({"model.name": "vggfer_s"}, stride) == ""
    sizes = ["data.size", "model.input_size"]  # a grid over sizes sets both
    assert settings_label({"data.size": 44, "model.input_size": 44}, sizes) == "size=44"
    assert settings_label({"data.size": 48, "model.input_size": 40}, sizes) == (
        "size=48 input_size=40"
    )


def test_merged_rows_replace_in_place_and_append_new_keys(tmp_path):
    """A re-evaluated model keeps its row's place in a committed table; a new one is appended."""
    from ferbench.report.benchmarks import merged

    path = tmp_path / "matrix.csv"
    pd.DataFrame({"model": ["a", "b", "c"], "acc": ["1", "2", "3"]}).to_csv(path, index=False)
    rows = merged(pd.DataFrame({"model": ["d", "b"], "acc": ["4", "9"]}), path, ["model"])
    assert list(rows["model"]) == ["a", "b", "c", "d"]
    assert list(rows["acc"]) == ["1", "9", "3", "4"]


def test_a_result_exported_under_a_new_label_replaces_its_old_row(tmp_path):
    """A recipe's settings label changes when its grid gains a trial; exporting the same trials
    again (from run directories or from their records) replaces their row in place."""
    from ferbench.report.benchmarks import merged

    path = tmp_path / "results.csv"
    old = {"model": ["a", "b", "c"], "settings": ["", "", ""],
           "runs": ["x/a/seed=0", "x/b/seed=0;x/b/seed=1", "y/c"]}  # fmt: skip
    pd.DataFrame(old).to_csv(path, index=False)
    new = pd.DataFrame({"model": ["b", "d"], "settings": ["size=48", ""],
                        "runs": ["runs/x/b/seed=0;x/b/seed=1;x/b/seed=2", "x/d"]})  # fmt: skip
    key = ["model", "settings"]
    rows = merged(new, path, key, lambda run: run.removeprefix("runs/"))
    assert list(rows["model"]) == ["a", "b", "c", "d"]
    assert list(rows["settings"]) == ["", "size=48", "", ""]
    assert list(merged(new, path, key)["model"]).count("b") == 2  # keyed alone: both stay


def test_ensemble_with_multi_scale_views_is_its_own_result(results, tmp_path):
    grid = tmp_path / "grid"
    shutil.copytree(results / "grid", grid)
    plain_out, zoom_out = tmp_path / "plain", tmp_path / "zooms"
    assert runner.invoke(app, ["ensemble", str(grid), "-o", str(plain_out)]).exit_code == 0
    kept = {p: p.read_bytes() for p in grid.rglob("predictions.npz")}
    zooms = ["ensemble", str(grid), "-o", str(zoom_out), "--scales", "0.9,1,1.1"]
    result = runner.invoke(app, zooms)
    assert result.exit_code == 0, result.output
    assert "test views: members at zooms 0.9/1/1.1" in result.output
    metrics = json.loads((zoom_out / "metrics.json").read_text())
    assert metrics["tta"] == "members at zooms 0.9/1/1.1"
    assert len(list(grid.rglob("predictions-zoom0.9+1+1.1.npz"))) == len(kept)
    assert {p: p.read_bytes() for p in grid.rglob("predictions.npz")} == kept  # both cached
    plain = json.loads((plain_out / "metrics.json").read_text())
    one_run = next(iter(kept)).parent
    with (
        np.load(one_run / "predictions.npz") as a,
        np.load(one_run / "predictions-zoom0.9+1+1.1.npz") as b,
    ):
        assert not np.allclose(a["val"], b["val"])  # other views, other probabilities
    over = runner.invoke(app, [*zooms[:3], str(plain_out), *zooms[4:]])
    chosen = lambda m: [(r["run"], round(r["weight"], 6)) for r in m["members"]]  # noqa: E731
    if chosen(metrics) == chosen(plain):  # the zooms changed the views only, not the choice
        assert "other test views (members)" in over.output
    assert over.exit_code == 1 and "--replace" in over.output  # the plain one is kept
    bad = runner.invoke(app, [*zooms[:5], "1,zoom"])
    assert bad.exit_code == 1
    assert "--scales: '1,zoom' is not a comma-separated list of distinct zooms" in bad.output
    for name, out in (("plain", plain_out), ("zooms", zoom_out)):
        exported = runner.invoke(
            app, ["compare", str(out), "--format", "csv", "--out", str(tmp_path / name),
                  "--export", str(tmp_path / "results-test.csv")],
        )  # fmt: skip
        assert exported.exit_code == 0, exported.output
    rows = pd.read_csv(tmp_path / "results-test.csv")
    assert len(rows) == 2  # side by side, not one over the other
    assert rows["settings"].str.endswith("(members at zooms 0.9/1/1.1)").sum() == 1


def test_a_single_run_carries_its_interval_and_seeds_their_std(results, tmp_path):
    """Issue 55: compare's table and the benchmark CSV/Markdown give a single run's accuracy
    its 95% Wilson interval over the test faces (new columns); seeds keep mean ± std (n).  A
    row kept from an older export, whose runs are gone, gets its interval from the faces its
    dataset's other rows counted."""
    from ferbench.report.stats import accuracy_interval

    csv = tmp_path / "results-test.csv"
    args = ["compare", str(results), "--format", "csv,md", "--out", str(tmp_path)]
    result = runner.invoke(app, [*args, "--export", str(csv)])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(csv, keep_default_na=False)
    single = rows[rows["seeds"] == 1].iloc[0]
    run = results.parent / single["runs"]
    metrics = json.loads((run / "metrics.json").read_text())
    faces = sum(map(sum, metrics["confusion"]))
    low, high = accuracy_interval(metrics["accuracy"], faces)
    assert int(single["test_faces"]) == faces
    interval = float(single["test_acc_lo"]), float(single["test_acc_hi"])
    assert interval == pytest.approx((low, high), abs=1e-6)
    seeds = rows[rows["seeds"] > 1]
    assert len(seeds) and (seeds["test_acc_lo"] == "").all()  # their spread is the std
    table = csv.with_suffix(".md").read_text()
    assert "test acc % (95% CI)" in table
    assert f"{metrics['accuracy'] * 100:.1f} ({low * 100:.1f}–{high * 100:.1f})" in table
    assert "± " in table and "(n=2)" in table
    assert f"({low * 100:.1f}–{high * 100:.1f})" in (tmp_path / "comparison.md").read_text()

    older = single.copy()  # exported before intervals were kept; its runs are not here
    older[["model", "runs", "test_acc_lo", "test_acc_hi", "test_faces"]] = ["old", "x", "", "", ""]
    older["test_acc_mean"] = 0.5
    pd.concat([rows, older.to_frame().T]).drop(
        columns=["test_acc_lo", "test_acc_hi", "test_faces"]
    ).to_csv(csv, index=False)
    assert runner.invoke(app, [*args, "--export", str(csv)]).exit_code == 0
    old = pd.read_csv(csv, keep_default_na=False).set_index("model").loc["old"]
    assert (float(old["test_acc_lo"]), float(old["test_acc_hi"])) == pytest.approx(
        accuracy_interval(0.5, faces), abs=1e-6
    )


def test_compare_paired_prints_the_difference_its_interval_and_p(results, tmp_path):
    """Issue 55: `compare RUN_A RUN_B --paired` pairs two runs on the same test faces (their
    kept probabilities, the labels of their data) and prints the difference with its paired
    bootstrap interval and McNemar's exact p; an ensemble pairs too, from its own kept
    probabilities or, for a record written before it kept them, from its members'."""
    from scipy.stats import binomtest

    from ferbench.data import load_dataset
    from ferbench.runs import RunDir

    a, b = sorted(p.parent for p in (results / "grid").rglob("predictions.npz"))[:2]
    out = tmp_path / "paired"
    result = runner.invoke(app, ["compare", str(a), str(b), "--paired", "--out", str(out)])
    assert result.exit_code == 0, result.output
    labels = load_dataset(RunDir(a).data_spec()).split("test")[1]
    right = [np.load(r / "predictions.npz")["test"].argmax(1) == labels for r in (a, b)]
    paired = json.loads((out / "paired.json").read_text())
    assert paired["faces"] == len(labels)
    assert paired["difference"] == pytest.approx(right[0].mean() - right[1].mean())
    low, high = paired["difference_ci95"]
    assert low <= paired["difference"] <= high
    only_a, only_b = int((right[0] & ~right[1]).sum()), int((~right[0] & right[1]).sum())
    assert (paired["only_a_correct"], paired["only_b_correct"]) == (only_a, only_b)
    expected_p = binomtest(min(only_a, only_b), only_a + only_b).pvalue if only_a + only_b else 1
    assert paired["mcnemar_exact_p"] == pytest.approx(expected_p)
    assert "A − B" in result.output and "95% CI" in result.output
    assert f"p = {paired['mcnemar_exact_p']:.3g}" in result.output
    three = runner.invoke(app, ["compare", str(a), str(b), str(a), "--paired"])
    assert three.exit_code != 0 and "exactly two runs" in three.output

    ensemble = tmp_path / "ens"
    assert (
        runner.invoke(app, ["ensemble", str(results / "grid"), "--out", str(ensemble)]).exit_code
        == 0
    )
    assert (ensemble / "predictions.npz").is_file()  # kept for paired tests
    with_kept = runner.invoke(
        app, ["compare", str(ensemble), str(a), "--paired", "--out", str(out)]
    )
    assert with_kept.exit_code == 0, with_kept.output
    kept = json.loads((out / "paired.json").read_text())
    (ensemble / "predictions.npz").unlink()  # a record from before: rebuilt from its members
    rebuilt = runner.invoke(app, ["compare", str(ensemble), str(a), "--paired", "--out", str(out)])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert json.loads((out / "paired.json").read_text()) == kept


def test_paired_refuses_runs_on_other_faces(results, tmp_path):
    (grid_run,) = [p.parent for p in (results / "grid").rglob("predictions.npz")][:1]
    other = next(p.parent for p in (results / "other").rglob("metrics.json"))
    copy = tmp_path / "other"
    shutil.copytree(other, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["data_identity"] = "0" * 32  # tested on other faces
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    refused = runner.invoke(app, ["compare", str(grid_run), str(copy), "--paired"])
    assert refused.exit_code == 1
    assert "other labels or splits" in refused.output or "different faces" in refused.output
