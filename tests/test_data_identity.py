"""Which faces a model trained on, against a dataset's splits: teachers and starts that saw a
run's validation or test faces are refused, eval's leak figures are the model's own, an export
keeps every test view, and `data leaks` looks between validation and test too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import noise_faces
from typer.testing import CliRunner

from ferbench.cli import app
from ferbench.config import DataSpec
from ferbench.data import load_dataset
from ferbench.data.leaks import leak_report
from ferbench.models.checkpoint import load_checkpoint, save_checkpoint
from ferbench.models.factory import model_from_checkpoint

cli = CliRunner()
CLASSES = ("angry", "happy", "sad")
SMALL = {"name": "vggfer_s", "input_size": 16, "args": {"widths": [8, 16, 32, 64]}}


def flat_folder(tmp_path: Path) -> Path:
    """Class folders with no split folders: test and validation are carved by data.seed."""
    return noise_faces(tmp_path / "faces", CLASSES, 30, 24)


def experiment(tmp_path: Path, name: str, folder: Path, seed: int, **train) -> Path:
    spec = {
        "name": name,
        "data": {"kind": "folder", "path": str(folder), "size": 16, "seed": seed},
        "models": [SMALL],
        "train": {"epochs": 1, "batch_size": 16, "seed": 0, **train},
        "eval": {"speed": False},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run(file: Path, results: Path):
    return cli.invoke(app, ["run", str(file), "--results", str(results)])


def test_a_teacher_from_a_split_with_another_seed_is_refused_one_of_the_same_split_taken(
    tmp_path,
):
    folder, results = flat_folder(tmp_path), tmp_path / "r"
    for seed in (0, 1):
        done = run(experiment(tmp_path, f"teacher{seed}", folder, seed), results)
        assert done.exit_code == 0, done.output
    other = next((results / "teacher1").rglob("best.pt")).parent
    same = next((results / "teacher0").rglob("best.pt")).parent

    refused = run(experiment(tmp_path, "student", folder, 0, distill={"teacher": str(other)}),
                  results)  # fmt: skip
    assert refused.exit_code == 1
    from ferbench.data.identity import face_hashes, seen_faces
    from ferbench.train.distill import trained_on_checkpoint

    status = json.loads(next((results / "student").rglob("status.json")).read_text())
    error = status["error"]
    expected = DataSpec(kind="folder", path=str(folder), size=16)
    seen = seen_faces(trained_on_checkpoint(str(other), other / "best.pt"), expected)
    assert seen.verdict == "seen" and seen.counts["test"] > 0 and seen.counts["val"] > 0
    counts = f"{seen.counts['test']} test and {seen.counts['val']} val faces of this run"
    assert f"train.distill.teacher: {other} was trained on {counts}" in error
    assert "data.seed 1, here 0" in error and len(error.splitlines()) == 1
    # the exact count: test faces of seed 0's split that seed 1's split trains on
    student, teacher = load_dataset(expected), load_dataset(expected.replace(seed=1))
    trained = set(face_hashes(teacher.split("train")[0]).tolist())
    assert sum(h in trained for h in face_hashes(student.split("test")[0]).tolist()) == \
        seen.counts["test"]  # fmt: skip

    taken = run(experiment(tmp_path, "student", folder, 0, distill={"teacher": str(same)}),
                results)  # fmt: skip
    assert taken.exit_code == 0, taken.output
    config = yaml.safe_load(next((results / "student").rglob("config.yaml")).read_text())
    assert config["data_checks"] == [
        f"train.distill.teacher: {same} was trained on this run's training split"
    ]


def test_eval_reports_leaks_only_of_the_faces_the_model_trained_on(tmp_path, checkpoint):
    """The model's training data is the evaluated data: near-duplicates of its training split;
    another split of the same faces: the faces it trained on; other data: no leak figures."""
    folder = flat_folder(tmp_path)
    payload = load_checkpoint(checkpoint)  # 7 classes: the folder's 3 among them
    model = model_from_checkpoint(payload)
    spec = DataSpec(kind="folder", path=str(folder), size=32)

    def evaluated(name: str, data_seed: int | None, fingerprint: str) -> dict:
        run = tmp_path / name
        run.mkdir()
        meta = {k: v for k, v in payload.items() if k not in ("state_dict", "format")}
        save_checkpoint(run / "best.pt", model, {**meta, "data_fingerprint": fingerprint})
        if data_seed is not None:  # a run folder: its config says where its faces are
            config = {
                "data": {**spec.to_dict(), "seed": data_seed},
                "data_fingerprint": fingerprint,
            }
            (run / "config.yaml").write_text(yaml.safe_dump(config))
        out = tmp_path / f"{name}.json"
        args = ["eval", str(folder), "--checkpoint", str(run / "best.pt"), "--split", "test"]
        result = cli.invoke(app, [*args, "--out", str(out)])
        assert result.exit_code == 0, result.output
        return json.loads(out.read_text())

    elsewhere = evaluated("elsewhere", None, "0" * 32)  # trained on faces not here
    assert "leaked" not in elsewhere
    from ferbench.data.identity import face_hashes

    own = evaluated("own", 0, load_dataset(spec).fingerprint())
    assert own["leaked"] == 0 and own["leak_kind"] == "near-duplicates"
    other_seed = load_dataset(spec.replace(seed=1))
    moved = evaluated("moved", 1, other_seed.fingerprint())
    trained = set(face_hashes(other_seed.split("train")[0]).tolist())
    expected = sum(h in trained for h in face_hashes(load_dataset(spec).split("test")[0]).tolist())
    assert expected > 0 and moved["leaked"] == expected
    assert moved["leak_kind"] == "its training faces, exact copies"


def test_an_onnx_export_keeps_the_zooms_and_evaluates_as_its_checkpoint(tmp_path, checkpoint):
    payload = load_checkpoint(checkpoint)
    three = tmp_path / "three.pt"
    meta = {k: v for k, v in payload.items() if k not in ("state_dict", "format")}
    meta.update(tta="flip", tta_scales=[0.9, 1.0, 1.1], amp="off", data_fingerprint="d" * 32)
    save_checkpoint(three, model_from_checkpoint(payload), meta)
    onnx_file = tmp_path / "three.onnx"
    pytest.importorskip("onnxruntime")
    exported = cli.invoke(app, ["export", "--checkpoint", str(three), "--out", str(onnx_file)])
    assert exported.exit_code == 0, exported.output

    def evaluated(model: Path) -> dict:
        out = tmp_path / f"{model.suffix[1:]}.json"
        args = ["eval", "synthetic", "--checkpoint", str(model), "--out", str(out)]
        result = cli.invoke(app, args)
        assert result.exit_code == 0, result.output
        return json.loads(out.read_text())

    pt, onnx = evaluated(three), evaluated(onnx_file)
    assert pt["scales"] == onnx["scales"] == [0.9, 1.0, 1.1]
    assert pt["tta"] == onnx["tta"] == "flip"
    assert pt["accuracy"] == onnx["accuracy"] and pt["per_class"] == onnx["per_class"]
    assert abs(pt["ece"] - onnx["ece"]) < 1e-4


def test_data_leaks_reports_test_faces_copied_into_validation(tmp_path):
    from ferbench.utils.opencv import cv2

    root = tmp_path / "faces"
    noise_faces(root / "train", CLASSES, 12, 48, seed=0)
    noise_faces(root / "test", CLASSES, 6, 48, seed=1)
    copied = 0
    for name in CLASSES:  # a validation folder holding two of each class's test faces
        (root / "val" / name).mkdir(parents=True)
        for i in range(2):
            image = cv2.imread(str(root / "test" / name / f"{i}.png"), cv2.IMREAD_GRAYSCALE)
            cv2.imwrite(str(root / "val" / name / f"{i}.png"), image)
            copied += 1
    data = load_dataset({"kind": "folder", "path": str(root), "size": 48})
    report = leak_report(data)
    assert len(report["val_test"]["leaked"]) == copied == report["val_test"]["exact"]
    assert set(report["val_test"]["leaked"]) <= set(np.flatnonzero(data.splits == 2).tolist())
    result = cli.invoke(app, ["data", "leaks", str(root)])
    assert result.exit_code == 0, result.output
    assert f"val ↔ test: {copied} of {len(CLASSES) * 6} test faces" in result.output


@pytest.mark.slow
def test_the_shipped_fer2013_model_teaches_and_starts_a_fer2013_student(shared_data):
    """experiments/robust-fer2013.yaml: vggfer_s.fer2013 as start and teacher of a FER2013
    student, at its own size and another; the check must take it."""
    from ferbench.models.pretrained import check_start
    from ferbench.train.distill import check_teacher, resolve_teacher

    for size in (48, 40):
        spec = DataSpec(kind="fer2013", path=str(shared_data / "fer2013/fer2013.csv.gz"),
                        size=size)  # fmt: skip
        data = load_dataset(spec)
        expected = "vggfer_s.fer2013 was trained on this run's training split"
        assert check_start("vggfer_s.fer2013", spec, data) == f"model.pretrained: {expected}"
        teacher = resolve_teacher("vggfer_s.fer2013")
        assert check_teacher(teacher, spec, data) == [f"train.distill.teacher: {expected}"]
