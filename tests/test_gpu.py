"""GPU paths: data on the device, batched augmentation there, bf16, channels_last
(skipped without CUDA)."""

from __future__ import annotations

import json

import pytest
import yaml

from ferbench.train import experiment
from ferbench.train.runner import execute_trial

pytestmark = pytest.mark.gpu


def test_tiny_trial_on_cuda(tmp_path):
    spec = {
        "name": "gpu",
        "data": {"kind": "synthetic", "n_per_class": 20, "size": 48},
        "models": ["resnet18"],
        "train": {"epochs": 2, "batch_size": 32, "optimizer": "sgd", "lr": 0.05, "seed": 0},
        "eval": {"tta": "tencrop"},
    }
    (tmp_path / "gpu.yaml").write_text(yaml.safe_dump(spec))
    trial = experiment.load(tmp_path / "gpu.yaml")[0]
    outcome = execute_trial(trial, tmp_path / "r", device="cuda")
    assert outcome.status == "done", outcome.error
    config = yaml.safe_load((tmp_path / "r" / "gpu" / trial.name / "config.yaml").read_text())
    assert (
        config["device"]["type"] == "cuda" and config["data_on_device"] and config["amp"] == "bf16"
    )
    metrics = json.loads((tmp_path / "r" / "gpu" / trial.name / "metrics.json").read_text())
    assert metrics["inference_images_per_s"] > 0
