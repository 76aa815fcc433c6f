"""`ferbench predict`, `eval` and `crosseval` on photos, folders and face crops."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from helpers import noise_faces
from typer.testing import CliRunner

from ferbench.cli import app

runner = CliRunner()
CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def test_predict_json_and_no_detect(tmp_path, checkpoint):
    from skimage import data

    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    (tmp_path / "broken.jpg").write_bytes(b"nope")
    result = runner.invoke(
        app,
        [
            "predict",
            str(photo),
            str(tmp_path / "broken.jpg"),
            "--checkpoint",
            str(checkpoint),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    faces = json.loads(result.stdout[result.stdout.index("[") :])
    assert len(faces) >= 1 and faces[0]["label"] in CLASSES and len(faces[0]["box"]) == 4
    crops = runner.invoke(
        app, ["predict", str(photo), "--checkpoint", str(checkpoint), "--no-detect", "--csv"]
    )
    assert crops.exit_code == 0 and crops.stdout.splitlines()[0].startswith("file,x,y,w,h,label")


def test_eval_matches_classes_by_name_and_counts_the_rest(tmp_path, checkpoint):
    for seed, split in enumerate(("train", "test")):
        noise_faces(tmp_path / "faces" / split, ("happy", "joy", "Sad"), 4, 60, seed)
    out = tmp_path / "eval.json"
    result = runner.invoke(
        app,
        ["eval", str(tmp_path / "faces"), "--checkpoint", str(checkpoint), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["images"] == 8  # happy + sad (case-insensitive), on the test split
    assert metrics["left_out"] == {"classes": ["joy"], "images": 4}
    assert sum(map(sum, metrics["confusion"])) == 8
    # issue 55: the accuracy carries its 95% interval, in the JSON and on the terminal
    low, high = metrics["accuracy_ci95"]
    assert low <= metrics["accuracy"] <= high and metrics["faces"] == 8
    assert f"95% CI {low:.4f}–{high:.4f}" in result.output
    assert metrics["scales"] == [1.0] and "single view," in result.output
    zooms = runner.invoke(
        app,
        ["eval", str(tmp_path / "faces"), "--checkpoint", str(checkpoint), "--out", str(out),
         "--scales", "0.9,1,1.1"],
    )  # fmt: skip
    assert zooms.exit_code == 0, zooms.output
    assert "single view at zooms 0.9/1/1.1" in zooms.output
    assert json.loads(out.read_text())["scales"] == [0.9, 1.0, 1.1]


def test_eval_of_a_folder_without_splits_uses_every_image(tmp_path, checkpoint):
    """Portrait-style folders name classes their own way and have no split level: every image is
    evaluated and the synonyms used are printed; unknown classes are left out and counted."""
    from ferbench.data.synthetic import make_synthetic

    faces = make_synthetic(3, 48, 0)
    words = {"angry": "anger", "happy": "happiness", "sad": "sadness", "neutral": "calm"}
    count, calm = 0, 0
    for image, label in zip(faces.images, faces.labels):
        name = faces.class_names[label]
        calm += name == "neutral"
        if name in words:
            folder = tmp_path / "faces" / words[name]
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{count}.png"), image)
            count += 1
    out = tmp_path / "eval.json"
    result = runner.invoke(
        app, ["eval", str(tmp_path / "faces"), "--checkpoint", str(checkpoint), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["split"] == "all" and metrics["images"] == count - calm  # 'calm' left out
    assert metrics["left_out"] == {"classes": ["calm"], "images": calm}
    assert "anger→angry" in result.output and "happiness→happy" in result.output


def astronaut_portraits(root: Path, counts: dict[str, int]) -> Path:
    """A folder of full-size photos (the astronaut, shifted on a larger canvas) in class folders
    named with other words than FER2013's, and one photo with no face in the last class."""
    from skimage import data

    portrait = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            canvas = cv2.copyMakeBorder(portrait, 40 * i, 0, 0, 60 * i, cv2.BORDER_CONSTANT)
            cv2.imwrite(str(root / name / f"{i}.jpg"), canvas)
    cv2.imwrite(str(root / name / "empty.jpg"), np.full((300, 400, 3), 90, np.uint8))
    return root


def test_eval_detect_on_portraits_with_other_class_words(tmp_path):
    root = astronaut_portraits(
        tmp_path / "portraits", {"anger": 2, "happiness": 3, "contempt": 1, "sadness": 2}
    )
    out = tmp_path / "eval.json"
    result = runner.invoke(app, ["eval", str(root), "--detect", "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["images"] == 7 and metrics["no_face"] == 1  # the blank photo
    assert metrics["left_out"] == {"classes": ["contempt"], "images": 1}
    assert metrics["class_map"] == {"angry": "angry", "happy": "happy", "sad": "sad"}
    assert "anger→angry, happiness→happy, sadness→sad" in " ".join(result.output.split())


def test_crosseval_matrix_of_models_and_datasets(tmp_path, checkpoint):
    import pandas as pd

    noise_faces(tmp_path / "mine", ("happy", "sad"), 4)
    noise_faces(tmp_path / "theirs", ("anger", "neutrality", "odd"), 4)
    astronaut_portraits(tmp_path / "photos", {"happiness": 2, "sadness": 1})
    out = tmp_path / "matrix.csv"
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- benchmarks:matrix -->\nold\n<!-- /benchmarks:matrix -->\nend\n")
    result = runner.invoke(
        app,
        ["crosseval", "--models", f"vggfer_s.fer2013,{checkpoint}", "--out", str(out),
         "--folder", str(tmp_path / "mine"), "--folder", str(tmp_path / "theirs"),
         "--portraits", str(tmp_path / "photos"), "--readme", str(readme)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = readme.read_text().split("<!-- benchmarks:matrix -->")[1]
    assert "old" not in table and table.endswith("<!-- /benchmarks:matrix -->\nend\n")
    assert table.splitlines()[1] == "| model (classes) | mine | theirs | photos |"
    assert "4 odd left out" in table  # the class the models do not know, counted in its cell
    again = runner.invoke(
        app,
        [
            "crosseval",
            "--models",
            checkpoint,
            "--out",
            str(out),
            "--folder",
            str(tmp_path / "mine"),
        ],
    )
    assert again.exit_code == 0, again.output
    assert len(pd.read_csv(out)) == 6  # its one row replaced, the other five kept
    matrix = pd.read_csv(out)
    assert len(matrix) == 6 and set(matrix["dataset"]) == {"mine", "theirs", "photos"}
    theirs = matrix[matrix["dataset"] == "theirs"].iloc[0]
    assert theirs["images"] == 8 and theirs["left_out_images"] == 4
    assert "anger→angry, neutrality→neutral" in theirs["notes"]
    photos = matrix[matrix["dataset"] == "photos"]
    assert (photos["images"] == 3).all() and (photos["no_face"] == 1).all()  # faces found first
    assert (matrix[matrix["dataset"] == "mine"]["no_face"] == 0).all()  # crops: no detection
