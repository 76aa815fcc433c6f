"""ONNX export: round trip, metadata, parity, int8 on real faces, and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from ferbench.cli import app
from ferbench.errors import FerbenchError
from ferbench.infer.onnx import read_metadata
from ferbench.infer.predictor import Predictor
from ferbench.utils.fileio import sha256_file

pytest.importorskip("onnxruntime")
runner = CliRunner()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, checkpoint) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "cnn5.onnx"
    result = runner.invoke(app, ["export", "--checkpoint", str(checkpoint), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (
        "max |Δ probability|" in result.output and "accuracy change not measured" in result.output
    )
    return out


def test_export_round_trip_and_metadata(exported, checkpoint):
    import onnx

    onnx.checker.check_model(onnx.load(str(exported)))
    meta = read_metadata(exported)
    source = Predictor(checkpoint, amp="off")
    assert meta["source_sha256"] == sha256_file(checkpoint)
    assert meta["class_names"] == source.class_names and meta["quantization"] == "none"
    assert meta["parity"]["fp32_max_abs_prob_diff"] <= 1e-4
    onnx_model = Predictor(exported)
    assert onnx_model.backend == "onnxruntime"
    assert onnx_model.preprocess == source.preprocess and onnx_model.model_name == "cnn5"
    crops = [np.random.default_rng(i).integers(0, 255, (40, 40), np.uint8) for i in range(17)]
    a, b = source.predict(crops), onnx_model.predict(crops)  # 17: a batch size never exported
    assert (a.argmax(1) == b.argmax(1)).all() and np.abs(a - b).max() < 1e-4


def test_onnx_works_where_a_checkpoint_does(tmp_path, exported, astronaut_video):
    live = runner.invoke(
        app,
        ["live", "--checkpoint", str(exported), "--source", str(astronaut_video[0]),
         "--no-window", "--max-frames", "6"],
    )  # fmt: skip
    assert live.exit_code == 0, live.output
    assert "6 frames" in live.output
    evaluated = runner.invoke(app, ["eval", "synthetic", "--checkpoint", str(exported)])
    assert evaluated.exit_code == 0, evaluated.output


def test_corrupt_or_foreign_onnx_is_one_line(tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07 certainly not protobuf")
    with pytest.raises(FerbenchError, match="not a loadable ONNX model"):
        Predictor(corrupt)
    foreign = tmp_path / "foreign.onnx"
    torch.onnx.export(torch.nn.Linear(4, 2), (torch.zeros(1, 4),), str(foreign), dynamo=False)
    result = runner.invoke(app, ["predict", str(tmp_path), "--checkpoint", str(foreign)])
    assert result.exit_code == 1 and "not exported by ferbench" in result.output


def test_missing_extra_names_it(tmp_path, exported):
    (tmp_path / "onnxruntime.py").write_text("raise ImportError('No module named onnxruntime')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "ferbench.cli", "eval", "synthetic", "--checkpoint", str(exported)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "pip install 'ferbench[onnx]'" in result.stderr


@pytest.mark.slow
def test_int8_agrees_with_fp32_on_real_fer2013(tmp_path, shared_data):
    """A small vggfer_s trained briefly on a FER2013 subset (about 27% accuracy: many near ties,
    the hard case for agreement), exported to static int8 calibrated on its own validation
    faces: fp32 matches PyTorch, int8 agrees with fp32 on most faces, accuracy barely moves."""
    csv = shared_data / "fer2013" / "fer2013.csv.gz"
    spec = {
        "name": "onnx",
        "data": {"kind": "fer2013", "path": str(csv), "fraction": 0.1},
        "models": [{"name": "vggfer_s", "input_size": 32, "args": {"widths": [16, 32, 64, 128]}}],
        "train": {
            "epochs": 4,
            "batch_size": 64,
            "lr": 0.05,
            "nesterov": True,
            "scheduler": "onecycle",
            "warmup_epochs": 1,
        },
        "eval": {"speed": False},
    }
    (tmp_path / "onnx.yaml").write_text(yaml.safe_dump(spec))
    trained = runner.invoke(
        app, ["run", str(tmp_path / "onnx.yaml"), "--results", str(tmp_path / "r")]
    )
    assert trained.exit_code == 0, trained.output
    run_dir = next((tmp_path / "r").rglob("best.pt")).parent
    out = tmp_path / "vggfer_s.int8.onnx"
    result = runner.invoke(
        app, ["export", "--checkpoint", str(run_dir), "--out", str(out), "--int8"]
    )
    assert result.exit_code == 0, result.output
    parity = read_metadata(out)["parity"]
    assert parity["quantization"] == "static" and parity["images"] > 300  # the run's own data
    assert parity["int8_top1_agreement"] >= 0.8, result.output
    for split in ("val", "test"):
        row = parity["accuracy"][split]
        assert abs(row["onnx_fp32"] - row["torch"]) < 1e-3
        assert abs(row["onnx_int8"] - row["onnx_fp32"]) < 0.03


def test_backend_choice_keeps_accuracy_within_half_a_point():
    from ferbench.infer.backend import Measured, choose

    measured = [
        Measured("torch", 2.0, 0.650),
        Measured("torch-int8", 0.8, 0.640),  # fastest, but loses a point
        Measured("onnx", 1.5, 0.650),
        Measured("onnx-int8", 1.0, 0.647),
    ]
    assert choose(measured).backend == "onnx-int8"
    unlabelled = [Measured(m.backend, m.latency_ms, None) for m in measured]
    assert choose(unlabelled).backend == "onnx"  # only exact backends without accuracy figures


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> Path:
    """A narrow vggfer_s (convolutions, batch norm, one linear layer): quick to export."""
    from ferbench.data.classes import FER2013_CLASSES
    from ferbench.models import Preprocess, create_model, model_card
    from ferbench.models.checkpoint import checkpoint_meta, save_checkpoint

    args = {"num_classes": 7, "in_chans": 1, "input_size": 40, "widths": [8, 16, 32, 64]}
    path = tmp_path_factory.mktemp("small") / "best.pt"
    meta = checkpoint_meta(
        "vggfer_s", args, FER2013_CLASSES, Preprocess.for_model(model_card("vggfer_s"), 40)
    )
    save_checkpoint(path, create_model("vggfer_s", **args), meta)
    return path


def test_live_auto_backend_is_measured_once_and_cached(
    small_checkpoint, astronaut_video, monkeypatch
):
    args = ["live", "--checkpoint", str(small_checkpoint), "--source", str(astronaut_video[0]),
            "--no-window", "--max-frames", "3"]  # fmt: skip
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "backend onnx:" in first.output or "backend torch:" in first.output
    cached = list(Path(os.environ["FERBENCH_CACHE_DIR"]).glob("backends/*/measured.json"))
    assert cached

    def measured_again(*args, **kwargs):
        raise AssertionError("the backends were measured again")

    monkeypatch.setattr("ferbench.infer.predictor.measure_speed", measured_again)
    again = runner.invoke(app, args)  # auto again: the choice comes from measured.json
    assert again.exit_code == 0, again.output
    assert first.output.split("backend ")[1].split(":")[0] in again.output
