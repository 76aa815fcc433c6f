"""Corruptions, the robustness suite, the framing gap and landmark alignment."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ferbench.data.corrupt import (
    FAMILIES,
    HELD_OUT_FAMILIES,
    TRAINED_FAMILIES,
    corrupt,
    corrupt_faces,
    random_corruptions,
    resolve_families,
)


def _faces(n=64, side=48, seed=0):
    """Smooth faces-like images (a gradient and a blob): noise would hide what blur does."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    out = []
    for _ in range(n):
        cx, cy = rng.uniform(0.3, 0.7, 2)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02)
        out.append(np.clip((0.3 + 0.3 * xx + 0.4 * blob) * 255, 0, 255))
    return np.stack(out).astype(np.uint8)


def test_every_family_is_deterministic_and_grows_with_severity():
    faces = _faces()
    for family in FAMILIES:
        a, b = corrupt_faces(faces, family, 3, seed=1), corrupt_faces(faces, family, 3, seed=1)
        assert a.dtype == np.uint8 and a.shape == faces.shape
        assert np.array_equal(a, b), family
        change = [
            np.abs(corrupt_faces(faces, family, s).astype(int) - faces).mean() for s in (1, 5)
        ]
        assert change[1] > change[0] > 0, (family, change)


def test_result_does_not_depend_on_the_batch():
    faces = _faces(700)
    whole = corrupt_faces(faces, "gaussian_noise", 2)
    assert np.array_equal(whole[600:], corrupt_faces(faces, "gaussian_noise", 2)[600:])
    assert not np.array_equal(whole, corrupt_faces(faces, "gaussian_noise", 2, seed=5))


def test_named_parameters_do_what_they_say():
    faces = _faces(16)
    dark = corrupt_faces(faces, "dark", 3)  # gamma 2.2 darkens every mid grey
    assert dark.mean() < faces.mean() - 20
    noisy = corrupt_faces(np.full((64, 48, 48), 128, np.uint8), "gaussian_noise", 3)
    assert abs(noisy.astype(float).std() - 18) < 1.5  # sigma 18 grey levels
    tighter = corrupt_faces(faces, "tighter", 5)  # zoom 1.33: the centre spreads out
    assert not np.array_equal(tighter, faces)
    x = torch.rand(4, 1, 48, 48)
    per_face = corrupt(x, "contrast", torch.tensor([1, 1, 5, 5]), torch.Generator())
    assert per_face[2:].std() < per_face[:2].std()


def test_families_resolve_by_group_and_name_and_fail_clearly():
    assert resolve_families("all") == list(FAMILIES)
    assert resolve_families("noise,jpeg") == ["gaussian_noise", "shot_noise", "salt_pepper", "jpeg"]
    assert set(resolve_families("held-out")) == set(HELD_OUT_FAMILIES)
    assert not set(TRAINED_FAMILIES) & set(HELD_OUT_FAMILIES)
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        resolve_families("fog")


def test_training_corruptions_touch_the_chosen_share():
    x = torch.rand(400, 1, 40, 40)
    out = random_corruptions(x, ("gaussian_noise",), 0.5, 5, torch.Generator().manual_seed(0))
    changed = (out - x).abs().flatten(1).amax(1) > 0
    assert 0.35 < changed.float().mean() < 0.65
    assert torch.equal(random_corruptions(x, (), 0.5, 5, torch.Generator()), x)


def test_augment_config_checks_corruption_keys(tmp_path):
    from ferbench.config import ConfigError
    from ferbench.train.experiment import load

    def write(augment):
        path = tmp_path / "e.yaml"
        path.write_text("name: e\nmodels: [cnn5]\ntrain: {augment: " + augment + "}\n")
        return path

    from ferbench.data.corrupt import training_families

    trials = load(write("{corrupt: 0.5, corrupt_families: [noise]}"))
    assert training_families(trials[0].train.augment) == (
        "gaussian_noise",
        "shot_noise",
        "salt_pepper",
    )
    with pytest.raises(ConfigError, match="corrupt_families"):
        load(write("{corrupt: 0.5, corrupt_families: [fog]}"))
    with pytest.raises(ConfigError, match="corrupt"):
        load(write("{corrupt: 1.5}"))


def test_suite_reports_mca_drift_and_held_out():
    from ferbench.infer.robustness import family_table, headline, robustness_suite

    faces, labels = _faces(60), np.arange(60) % 3

    def brightness_model(images):  # "class" from brightness: darkening drifts to class 0
        level = images.reshape(len(images), -1).mean(1)
        probs = np.zeros((len(images), 3))
        probs[np.arange(len(images)), np.clip((level - 60) // 30, 0, 2).astype(int)] = 1
        return probs

    result = robustness_suite(
        brightness_model, faces, labels, ["a", "b", "c"], 48, ["dark", "gaussian_noise"], (1, 3)
    )
    dark = [r for r in result["conditions"] if r["family"] == "dark"]
    assert dark[-1]["top_class"] == "a" and dark[-1]["top_share"] == 1.0
    assert result["drift"]["class"] == "a" and result["drift"]["severity"] == 3
    assert result["mca"] == pytest.approx(np.mean([r["accuracy"] for r in result["conditions"]]))
    assert result["mca_held_out"] is None  # both families are trained ones
    assert [row["family"] for row in family_table(result)] == ["dark", "gaussian_noise"]
    assert "drift: a takes 100%" in headline(result)
    json.dumps(result)  # goes to the eval JSON as it is


def test_similarity_recovers_a_known_transform():
    from ferbench.faces.align import similarity

    src = np.array([[10, 10], [30, 12], [20, 25], [12, 35], [29, 36]], float)
    angle, scale, shift = 0.3, 1.7, np.array([5.0, -3.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ (scale * rot).T + shift
    matrix = similarity(src, dst)
    assert np.allclose(matrix[:, :2], scale * rot) and np.allclose(matrix[:, 2], shift)


def test_framer_aligns_detected_faces_and_reuses_landmarks_when_tracked():
    from ferbench.faces.align import FER2013_TEMPLATE, FaceFramer

    frame = np.zeros((200, 200, 3), np.uint8)
    template = np.array(FER2013_TEMPLATE)
    points = 50 + template * 100  # a face whose landmarks sit on the template, 100 px wide
    frame[int(points[0, 1]) - 2 : int(points[0, 1]) + 3, int(points[0, 0]) - 2 :] = 255
    framer = FaceFramer(FER2013_TEMPLATE, size=48)
    box = (50, 50, 100, 100)
    first = framer(frame, [7], [box], {7: points})[0]
    assert first.shape[:2] == (100, 100)  # the face's own scale, at most 4x the input
    eye_row = int(round(template[0, 1] * 100))
    assert first[eye_row, :, 0].mean() > 100  # the bright eye line lands on the template's row
    moved = framer(np.roll(frame, 10, axis=1), [7], [(60, 50, 100, 100)], {})[0]
    assert np.array_equal(moved, first)  # tracked: the last landmarks, moved with the box
    assert FaceFramer(None)(frame, [1], [box])[0].shape[:2] == (104, 104)  # box crop, margin


def test_mtcnn_gives_landmarks_inside_its_boxes():
    from skimage import data

    from ferbench.faces.detect import make_detector
    from ferbench.utils.opencv import cv2

    image = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    detector = make_detector("mtcnn")
    boxes = detector(image)
    assert boxes and detector.last_landmarks.shape == (len(boxes), 5, 2)
    (x, y, w, h), points = boxes[0], detector.last_landmarks[0]
    assert (points[:, 0] > x - w * 0.1).all() and (points[:, 0] < x + w * 1.1).all()
    assert (points[:, 1] > y - h * 0.1).all() and (points[:, 1] < y + h * 1.1).all()
    assert points[0, 0] < points[1, 0] and points[2, 1] < points[3, 1]  # eyes, nose, mouth


def test_eval_corruptions_and_data_corrupt_cli(tmp_path, checkpoint):
    from ferbench.cli import app

    runner = CliRunner()
    out = tmp_path / "eval.json"
    result = runner.invoke(
        app,
        [
            "eval", "synthetic", "--checkpoint", str(checkpoint), "--corruptions", "blur,dark",
            "--severities", "1,5", "--out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "mCA" in result.output and "defocus_blur (held out)" in result.output
    assert "predicted share (truth): angry" in result.output
    robustness = json.loads(out.read_text())["robustness"]
    assert len(robustness["conditions"]) == 4 * 2
    bad = runner.invoke(app, ["eval", "synthetic", "--corruptions", "fog"])
    assert bad.exit_code != 0 and "unknown corruption 'fog'" in bad.output
    written = runner.invoke(
        app, ["data", "corrupt", "synthetic", str(tmp_path / "c"), "--corruptions", "jpeg",
              "--severities", "2"],
    )  # fmt: skip
    assert written.exit_code == 0, written.output
    clean = sorted((tmp_path / "c" / "clean").rglob("*.png"))
    jpeg = sorted((tmp_path / "c" / "jpeg" / "2").rglob("*.png"))
    assert len(clean) == len(jpeg) > 0
    assert [p.relative_to(tmp_path / "c" / "clean") for p in clean] == [
        p.relative_to(tmp_path / "c" / "jpeg" / "2") for p in jpeg
    ]


def test_a_trial_trains_on_corruptions_and_scores_the_suite(tmp_path):
    import yaml

    from ferbench.cli import app
    from ferbench.train import experiment

    spec = {
        "name": "robust",
        "data": {"kind": "synthetic", "n_per_class": 12, "size": 16},
        "models": [{"name": "cnn5", "input_size": 16}],
        "train": {"epochs": 1, "batch_size": 16, "augment": {"corrupt": 0.5}},
        "eval": {"speed": False, "corruptions": ["dark", "shift"]},
    }
    file = tmp_path / "robust.yaml"
    file.write_text(yaml.safe_dump(spec))
    from ferbench.data.corrupt import training_families

    trial = experiment.load(file)[0]
    assert training_families(trial.train.augment) == TRAINED_FAMILIES
    without = dict(spec, eval={"speed": False})
    file.with_name("plain.yaml").write_text(yaml.safe_dump(without))
    # what is reported is not what is learned: the same trial, the same hash
    assert experiment.load(file.with_name("plain.yaml"))[0].config_hash() == trial.config_hash()
    result = CliRunner().invoke(app, ["run", str(file), "--results", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    metrics = json.loads(next((tmp_path / "r").rglob("metrics.json")).read_text())
    suite = metrics["robustness"]
    assert len(suite["conditions"]) == 10 and suite["mca_held_out"] is not None
    assert sum(suite["clean"]["shares"].values()) == pytest.approx(1, abs=1e-3)
    assert "robustness" in metrics["phase_s"]
