"""`--model NAME`: which finished run it means, by a rule that never compares validation
accuracies across datasets, said in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import yaml
from typer.testing import CliRunner

from ferbench.cli import app
from ferbench.runs import RunDir, best_run
from ferbench.utils.fileio import write_json

cli = CliRunner()


def finished_run(
    results: Path, name: str, checkpoint: Path, data: dict, val_acc: float, updated: str, **extra
) -> Path:
    """A run folder as a finished trial leaves it (config, status, metrics, best.pt)."""
    path = results / name / "cnn5" / "seed=0"
    path.mkdir(parents=True)
    shutil.copy(checkpoint, path / "best.pt")
    config = {"experiment": name, "model": {"name": "cnn5"}, "data": data, **extra}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    write_json(path / "metrics.json", {"best_val_acc": val_acc, "accuracy": val_acc - 0.01})
    write_json(path / "status.json", {"status": "done", "updated": updated})
    return path


def test_a_real_data_run_beats_a_synthetic_one_and_the_choice_is_said(tmp_path, checkpoint):
    """The quickstart (synthetic, 99% on validation) and then a FER2013 run (62%):
    `--model` takes the FER2013 run and names it, its data and its accuracy."""
    results = tmp_path / "results"
    finished_run(results, "quickstart", checkpoint, {"kind": "synthetic"}, 0.99,
                 "2025-01-01T10:00:00", dataset="synthetic", data_identity="s" * 32,
                 data_fingerprint="5" * 32)  # fmt: skip
    fer = finished_run(results, "fer", checkpoint, {"kind": "fer2013", "path": "fer.csv"}, 0.62,
                       "2025-01-01T09:00:00", dataset="FER2013", data_identity="f" * 32,
                       data_fingerprint="4002" * 8)  # fmt: skip
    assert best_run("cnn5", results).path == fer  # not the synthetic run's 99%
    from ferbench.runs import choose_run

    line = choose_run("cnn5", results).line
    assert str(fer) in line and "FER2013" in line and "data 40024002" in line
    assert "val acc 62.0%" in line and "passed over 1 on synthetic faces" in line

    face = tmp_path / "face.png"
    cv2.imwrite(str(face), np.full((32, 32), 128, np.uint8))
    args = ["predict", str(face), "--model", "cnn5", "--no-detect", "--results", str(results)]
    result = cli.invoke(app, args)
    assert result.exit_code == 0, result.output
    said = [line for line in result.output.splitlines() if line.startswith("--model cnn5:")]
    assert len(said) == 1 and str(fer) in said[0] and "FER2013" in said[0]


def test_the_data_given_or_else_the_newest_runs_data_then_the_best_on_validation(
    tmp_path, checkpoint
):
    from ferbench.runs import choose_run

    results = tmp_path / "results"
    for name in ("a.csv", "b.csv"):
        (tmp_path / name).write_text("emotion,pixels,Usage\n")
    data_a = {"kind": "fer2013", "path": str(tmp_path / "a.csv")}
    data_b = {"kind": "fer2013", "path": str(tmp_path / "b.csv")}
    a_best = finished_run(results, "a1", checkpoint, data_a, 0.70, "2025-01-01T08:00:00",
                          data_identity="a" * 32)  # fmt: skip
    finished_run(results, "a2", checkpoint, data_a, 0.60, "2025-01-01T09:00:00",
                 data_identity="a" * 32)  # fmt: skip
    b_best = finished_run(results, "b1", checkpoint, data_b, 0.50, "2025-01-01T10:00:00",
                          data_identity="b" * 32)  # fmt: skip
    # no data given: the newest run's data (b), even though a's runs score higher there
    choice = choose_run("cnn5", results)
    assert choice.run.path == b_best and "passed over 2 on other data" in choice.line
    # the data given: the best on validation of the runs trained on that file
    choice = choose_run("cnn5", results, tmp_path / "a.csv")
    assert choice.run.path == a_best and "of 2 finished cnn5 run(s) on" in choice.line
    # an unfinished run is never chosen
    RunDir(a_best).write_status("running", "t", "h")
    (a_best / ".lock").unlink(missing_ok=True)
    assert choose_run("cnn5", results, tmp_path / "a.csv").run.path != a_best
