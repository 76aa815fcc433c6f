"""Shipped weights: in the package and the wheel, sha256-checked, loadable by tag, fine-tunable
with a new head, and the default model of `predict` and `live`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import pytest
import torch
from helpers import noise_faces
from typer.testing import CliRunner

from ferbench.cli import app
from ferbench.errors import FerbenchError
from ferbench.models import create_model
from ferbench.models import pretrained as shipped
from ferbench.models.pretrained import DEFAULT_TAG, read_index, resolve_weights
from ferbench.utils.fileio import sha256_file

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["vggfer_s.fer2013", "vggfer_s.ferplus"]


def test_every_shipped_file_matches_its_recorded_sha256_and_size():
    index = read_index()
    assert DEFAULT_TAG in index
    for name, weights in index.items():
        assert sha256_file(weights.path) == weights.sha256, name
        assert weights.path.stat().st_size <= 5 * 1024 * 1024
        assert weights.card_path.is_file() and weights.sha256 in weights.card_path.read_text()
        payload = torch.load(weights.path, map_location="cpu", weights_only=True)
        floats = [v for v in payload["state_dict"].values() if v.is_floating_point()]
        assert floats and all(v.dtype == torch.float16 for v in floats)
        assert list(payload["class_names"]) == list(weights.class_names)


def test_a_damaged_file_is_refused_with_one_line(tmp_path, monkeypatch):
    weights = read_index()[DEFAULT_TAG]
    damaged = tmp_path / weights.file
    data = bytearray(weights.path.read_bytes())
    data[-100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FerbenchError, match="differs from the recorded"):
        weights.verified_path()


def test_create_model_by_tag_loads_the_shipped_weights():
    weights = read_index()[DEFAULT_TAG]
    model = create_model(DEFAULT_TAG, pretrained=True).eval()
    payload = torch.load(weights.path, map_location="cpu", weights_only=True)
    for key, value in payload["state_dict"].items():
        assert torch.equal(model.state_dict()[key].to(value.dtype), value), key
    same = create_model(weights.model, pretrained=weights.tag).eval()
    x = torch.randn(2, 1, weights.input_size, weights.input_size)
    with torch.no_grad():
        assert model(x).shape == (2, len(weights.class_names))
        assert torch.allclose(model(x), same(x))
    with pytest.raises(FerbenchError, match="no shipped weights 'nope'"):
        resolve_weights(weights.model, "nope")


def test_pretrained_with_another_class_list_starts_a_new_head():
    weights = read_index()[DEFAULT_TAG]
    model = create_model(weights.model, num_classes=3, pretrained=True)
    head = [k for k, v in model.state_dict().items() if v.shape[:1] == (3,)]
    assert head  # the classifier was sized for 3 classes
    payload = torch.load(weights.path, map_location="cpu", weights_only=True)
    body = [k for k in payload["state_dict"] if k not in head]
    for key in body:
        assert torch.equal(model.state_dict()[key].half(), payload["state_dict"][key].half()), key


def test_experiment_fine_tunes_from_shipped_weights_on_a_folder(tmp_path):
    for seed, split in enumerate(("train", "test")):
        noise_faces(tmp_path / "faces" / split, ("happy", "sad", "calm"), 12, 56, seed)
    experiment = tmp_path / "tune.yaml"
    experiment.write_text(
        "name: tune\n"
        f"data: {{kind: folder, path: {tmp_path / 'faces'}}}\n"
        "models: [{name: vggfer_s, pretrained: fer2013}]\n"
        "train: {epochs: 1, batch_size: 16, lr: 0.01}\n"
        "eval: {speed: false}\n"
    )
    results = tmp_path / "results"
    result = runner.invoke(app, ["run", str(experiment), "--results", str(results)])
    assert result.exit_code == 0, result.output
    run = results / "tune" / "vggfer_s" / "pretrained=fer2013" / "seed=0"
    payload = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    assert sorted(payload["class_names"]) == ["calm", "happy", "sad"]
    config = (run / "config.yaml").read_text()
    assert "pretrained: vggfer_s.fer2013\n" in config  # the tag named, not the default
    bad = tmp_path / "bad.yaml"
    bad.write_text(experiment.read_text().replace("fer2013", "imagenet"))
    result = runner.invoke(app, ["run", str(bad), "--results", str(results)])
    assert result.exit_code == 1
    assert "bad.yaml: models[0].pretrained: no shipped weights 'imagenet'" in result.output


def test_predict_uses_the_shipped_model_by_default(tmp_path):
    from skimage import data

    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    result = runner.invoke(app, ["predict", str(photo), "--json"])
    assert result.exit_code == 0, result.output
    assert f"using the shipped model {DEFAULT_TAG}" in result.stderr
    faces = json.loads(result.stdout)
    assert len(faces) == 1 and faces[0]["label"] in read_index()[DEFAULT_TAG].class_names
    # a model name without finished runs explains both ways out
    result = runner.invoke(app, ["predict", str(photo), "--model", "cnn3", "-r", str(tmp_path)])
    assert result.exit_code == 1
    assert "ferbench run" in result.output and DEFAULT_TAG in result.output


def test_models_marks_weights_and_prints_the_card():
    result = runner.invoke(app, ["models", "vggfer_s*"])
    assert result.exit_code == 0 and DEFAULT_TAG in result.output
    card = runner.invoke(app, ["models", DEFAULT_TAG])
    assert card.exit_code == 0
    for heading in ("Protocol", "Confusion matrix", "Reproduce", "License"):
        assert heading in card.output


@pytest.mark.slow
def test_the_built_wheel_carries_the_weights(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("needs git to copy the tracked tree")
    source = tmp_path / "src"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    try:  # build with the installed setuptools when there is one (no download)
        import setuptools  # noqa: F401

        isolation = ["--no-build-isolation"]
    except ImportError:
        isolation = []
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q",
         "-w", str(tmp_path / "dist"), str(source)],
        check=True,
    )  # fmt: skip
    wheel = next((tmp_path / "dist").glob("ferbench-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for name, weights in read_index().items():
        assert f"ferbench/models/weights/{weights.file}" in names, name
        assert f"ferbench/models/weights/{weights.card}" in names, name
    assert "ferbench/models/weights/index.json" in names
    assert "ferbench/models/weights/LICENSE-fer2013.md" in names
    assert {"ferbench/faces/weights/mtcnn.pt", "ferbench/faces/weights/LICENSE-mtcnn.md"} <= names
