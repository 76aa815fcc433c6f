"""`ferbench ship`: a run becomes shipped weights, and a failing ship replaces nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from ferbench.cli import app
from ferbench.errors import FerbenchError
from ferbench.infer.predictor import Predictor
from ferbench.models import ship as ship_module
from ferbench.models.checkpoint import load_checkpoint

cli = CliRunner()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ship")
    spec = {
        "name": "shipme",
        "data": {"kind": "synthetic", "n_per_class": 10, "size": 16},
        "models": [{"name": "vggfer_s", "input_size": 16, "args": {"widths": [8, 16, 32, 64]}}],
        "train": {"epochs": 1, "batch_size": 16, "seed": 0},
        "eval": {"speed": False},
    }
    (tmp / "e.yaml").write_text(yaml.safe_dump(spec))
    result = cli.invoke(app, ["run", str(tmp / "e.yaml"), "--results", str(tmp / "r")])
    assert result.exit_code == 0, result.output
    (run_dir,) = {p.parent for p in (tmp / "r").rglob("best.pt")}
    return run_dir


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_ship_writes_file_card_and_index(small_run, tmp_path):
    out = tmp_path / "weights"
    result = cli.invoke(app, ["ship", str(small_run), "--tag", "demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "index.json",
        "vggfer_s.demo.md",
        "vggfer_s.demo.pt",
    ]
    row = json.loads((out / "index.json").read_text())["vggfer_s.demo"]
    assert row["sha256"] == hashlib.sha256((out / "vggfer_s.demo.pt").read_bytes()).hexdigest()
    assert row["dataset"].startswith("synthetic faces") and row["data_fingerprint"]
    trained = json.loads((small_run / "metrics.json").read_text())  # for ensembles it joins
    assert row["metrics"]["train_time_s"] == trained["train_time_s"] > 0
    payload = load_checkpoint(out / "vggfer_s.demo.pt")
    assert all(
        v.dtype.is_floating_point is False or v.dtype.itemsize == 2
        for v in payload["state_dict"].values()
    )
    card = (out / "vggfer_s.demo.md").read_text()
    assert f"{row['metrics']['test_acc']:.2%}" in card and row["sha256"] in card
    assert "test accuracy** (95% CI " in card and "| 95% CI (Wilson) |" in card  # issue 55
    assert str(small_run.parents[3]) not in card  # no path of the training machine
    latency = row["metrics"]["latency_ms"]  # the deployment path's figures, in card and index
    assert set(latency) == {"torch_fp32", "onnx_fp32", "onnx_int8"}
    assert all(0 < ms < 1000 for ms in latency.values())
    assert f"ONNX Runtime {latency['onnx_fp32']:.2f} ms (fp32)" in card


def test_failing_ship_leaves_the_shipped_files_byte_identical(small_run, tmp_path, monkeypatch):
    out = tmp_path / "weights"
    assert (
        cli.invoke(app, ["ship", str(small_run), "--tag", "demo", "--out", str(out)]).exit_code == 0
    )
    before = digests(out)
    monkeypatch.setattr(ship_module, "MAX_BYTES", 1000)
    result = cli.invoke(app, ["ship", str(small_run), "--tag", "demo", "--out", str(out)])
    assert result.exit_code == 1
    assert "over the 0 MB" in result.output and "nothing was replaced" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert digests(out) == before  # byte-identical, and no staging folder left behind
    monkeypatch.setattr(ship_module, "MAX_BYTES", 5 * 2**20)

    def broken(*args, **kwargs):
        raise FerbenchError("evaluation failed")

    monkeypatch.setattr("ferbench.infer.cross_eval.evaluate_checkpoint", broken)
    with pytest.raises(FerbenchError, match="evaluation failed"):
        ship_module.ship(small_run, "demo", weights_dir=out)
    assert digests(out) == before


def test_a_distilled_models_card_names_its_teacher_and_members_without_machine_paths():
    from ferbench.report.model_card import _teacher_lines

    config = {
        "train": {
            "distill": {"teacher": "results/ensembles/members", "alpha": 0.7, "temperature": 3.0}
        },  # fmt: skip
        "teacher": {
            "teacher": "/home/me/results/ensembles/members",
            "members": [
                {
                    "checkpoint": "/home/me/results/speedrun70/vggfer_s/size=48/seed=0/best.pt",
                    "weight": 0.5,
                },  # fmt: skip
                {
                    "checkpoint": "/home/me/results/members-fer2013/vggfer_s/size=44/seed=1/"
                    "best.pt",
                    "weight": 0.5,
                    "temperature": 0.8512,  # an ensemble built with --calibrate
                },  # fmt: skip
            ],
        },
    }
    (line,) = _teacher_lines(config)
    assert "`members`" in line and "/home/me" not in line
    assert "`speedrun70/vggfer_s/size=48/seed=0` (0.50)" in line
    assert "`members-fer2013/vggfer_s/size=44/seed=1` (0.50, T 0.85)" in line
    assert "0.7 T^2 KL" in line and "T = 3.0" in line
    assert "test views, computed once" in line
    config["train"]["distill"]["views"] = "student"
    assert "each augmented training batch" in _teacher_lines(config)[0]
    assert _teacher_lines({"train": {}}) == []


def test_ship_calibrate_keeps_predictions_and_records_the_fit(small_run, tmp_path):
    plain, calibrated = tmp_path / "plain", tmp_path / "calibrated"
    args = ["ship", str(small_run), "--tag", "demo", "--out"]
    assert cli.invoke(app, [*args, str(plain)]).exit_code == 0
    result = cli.invoke(app, [*args, str(calibrated), "--calibrate"])
    assert result.exit_code == 0, result.output
    row = json.loads((calibrated / "index.json").read_text())["vggfer_s.demo"]
    plain_row = json.loads((plain / "index.json").read_text())["vggfer_s.demo"]
    assert row["metrics"]["test_acc"] == plain_row["metrics"]["test_acc"]
    assert row["metrics"]["temperature"] != 1.0 and plain_row["metrics"]["temperature"] == 1.0
    assert f"temperature {row['metrics']['temperature']:.3f}" in " ".join(result.output.split())
    a, b = Predictor(plain / "vggfer_s.demo.pt"), Predictor(calibrated / "vggfer_s.demo.pt")
    faces = torch.randint(0, 256, (32, 16, 16), dtype=torch.uint8).numpy()
    pa, pb = a.predict_arrays(faces), b.predict_arrays(faces)
    assert (pa.argmax(1) == pb.argmax(1)).all() and not torch.allclose(
        torch.from_numpy(pa), torch.from_numpy(pb)
    )
    calibration = b.payload["calibration"]
    (loss_before, loss_after) = calibration["val_log_loss"]
    assert loss_after <= loss_before
    card = (calibrated / "vggfer_s.demo.md").read_text()
    assert f"T = {calibration['temperature']:.3f}" in card
    assert "a single view's prediction is unchanged" in card


def test_ship_with_scales_keeps_the_zooms_and_calibrates_on_them(small_run, tmp_path):
    out = tmp_path / "weights"
    args = ["ship", str(small_run), "--tag", "demo", "--out", str(out), "--calibrate"]
    bad = cli.invoke(app, [*args, "--scales", "1,1"])
    assert bad.exit_code == 1 and "--scales: '1,1' is not" in bad.output and not out.exists()
    result = cli.invoke(app, [*args, "--scales", "0.9,1,1.1"])
    assert result.exit_code == 0, result.output
    row = json.loads((out / "index.json").read_text())["vggfer_s.demo"]
    assert row["metrics"]["scales"] == [0.9, 1.0, 1.1]
    shipped = Predictor(out / "vggfer_s.demo.pt")
    assert shipped.scales == (0.9, 1.0, 1.1)  # what `ferbench eval` takes unasked
    assert "at zooms 0.9/1/1.1" in shipped.payload["calibration"]["fitted_on"]
    card = (out / "vggfer_s.demo.md").read_text()
    assert "at zooms 0.9/1/1.1" in card and f"{row['metrics']['test_acc']:.2%}" in card
    assert load_checkpoint(small_run / "best.pt").get("tta_scales", [1.0]) == [1.0]  # run kept
