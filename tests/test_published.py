"""RAF-DB, AffectNet and ExpW read in their published layouts, with their own label codes.

Each fixture paints every face with a grey level that encodes its true class, and gives the
classes unequal counts, so a wrong code map shows in the counts and in the pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ferbench.cli import app
from ferbench.data import load_dataset
from ferbench.data.classes import FER2013_CLASSES
from ferbench.errors import FerbenchError
from ferbench.utils.opencv import cv2

cli = CliRunner()
GREY = {name: 20 + 25 * i for i, name in enumerate([*FER2013_CLASSES, "contempt"])}


def face(name: str, side: int = 100) -> np.ndarray:
    return np.full((side, side), GREY[name], np.uint8)


def assert_pixels_match_labels(data):
    for image, label in zip(data.images, data.labels):
        assert abs(int(np.median(image)) - GREY[data.class_names[label]]) <= 2


def rafdb(root, counts: dict[str, tuple[int, int]]):
    codes = {"surprise": 1, "fear": 2, "disgust": 3, "happy": 4, "sad": 5, "angry": 6,
             "neutral": 7}  # fmt: skip
    (root / "EmoLabel").mkdir(parents=True)
    (root / "Image" / "aligned").mkdir(parents=True)
    lines, n = [], 0
    for name, (train, test) in counts.items():
        for split, count in (("train", train), ("test", test)):
            for _ in range(count):
                n += 1
                stem = f"{split}_{n:05d}"
                cv2.imwrite(str(root / "Image" / "aligned" / f"{stem}_aligned.jpg"), face(name))
                lines.append(f"{stem}.jpg {codes[name]}")
    lines += ["train_09999.jpg 4", "train_00001.jpg 9", "garbage"]  # missing, unknown, bad
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


def test_rafdb_codes_splits_and_bad_lines(tmp_path):
    counts = {"surprise": (3, 1), "fear": (1, 1), "disgust": (2, 1), "happy": (6, 2),
              "sad": (2, 1), "angry": (1, 1), "neutral": (4, 2)}  # fmt: skip
    data = load_dataset({"kind": "auto", "path": str(rafdb(tmp_path / "raf", counts))})
    assert data.source.startswith("rafdb") and data.dataset == "RAF-DB (basic, aligned)"
    table = data.counts()
    for name, (train, test) in counts.items():
        c = data.class_names.index(name)
        assert table[0, c] + table[1, c] == train and table[2, c] == test, name
    assert_pixels_match_labels(data)
    skipped = {k: v["count"] for k, v in data.problems.items()}
    assert skipped == {
        "label lines naming a missing image": 1,
        "unknown label codes (RAF-DB uses 1-7)": 1,
        "label lines not 'name code'": 1,
    }


def affectnet(root):
    codes = ["neutral", "happy", "sad", "surprise", "fear", "disgust", "angry", "contempt"]
    (root / "Manually_Annotated_file_lists").mkdir(parents=True)
    (root / "Manually_Annotated_Images" / "1").mkdir(parents=True)
    header = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
              "expression,valence,arousal")  # fmt: skip
    expected = {}
    n = 0
    for list_name, per_code in (("training.csv", [5, 4, 1, 2, 1, 1, 3, 2]),
                                ("validation.csv", [2, 2, 1, 1, 1, 1, 1, 1])):  # fmt: skip
        rows = [header]
        for code, count in enumerate(per_code):
            for _ in range(count):
                n += 1
                image = np.full((160, 200), 255, np.uint8)
                image[30:110, 50:130] = GREY[codes[code]]  # the face, where its box says
                cv2.imwrite(str(root / "Manually_Annotated_Images" / "1" / f"{n}.png"), image)
                rows.append(f'1/{n}.png,50,30,80,80,"1;2",{code},0.5,-0.25')
            expected[(list_name, codes[code])] = count
        rows += ["1/1.png,50,30,80,80,\"\",8,0,0", "1/1.png,50,30,80,80,\"\",10,0,0",
                 "1/404.png,50,30,80,80,\"\",1,0,0", "1/1.png,50,30"]  # fmt: skip
        (root / "Manually_Annotated_file_lists" / list_name).write_text("\n".join(rows) + "\n")
    return root, expected


def test_affectnet_boxes_codes_and_left_out_rows(tmp_path):
    root, expected = affectnet(tmp_path / "affectnet")
    data = load_dataset({"kind": "auto", "path": str(root), "size": 48})
    assert data.class_names[-1] == "contempt" and data.images.shape[1:] == (48, 48)
    table = data.counts()
    for (list_name, name), count in expected.items():
        c = data.class_names.index(name)
        got = table[0, c] + table[1, c] if list_name == "training.csv" else table[2, c]
        assert got == count, (list_name, name)
    assert_pixels_match_labels(data)  # cropped by the box: nothing of the white page
    skipped = {k: v["count"] for k, v in data.problems.items()}
    assert skipped["not an expression (8 none, 9 uncertain, 10 no face)"] == 4
    assert skipped["rows naming a missing image"] == 2
    assert skipped["truncated or malformed rows"] == 2
    assert any("valence mean +0.50" in n for n in data.notes)


def expw(root, faces_per_class=(3, 1, 2, 6, 4, 2, 5)):
    (root / "label").mkdir(parents=True)
    (root / "image" / "origin").mkdir(parents=True)
    lines, n = [], 0
    for code, count in enumerate(faces_per_class):
        for _ in range(count):
            n += 1
            scene = np.full((200, 300), 255, np.uint8)
            scene[20:100, 10:90] = GREY[FER2013_CLASSES[code]]  # first face: this class
            scene[100:180, 200:280] = GREY["neutral"]  # a second face in the same scene
            cv2.imwrite(str(root / "image" / "origin" / f"s{n}.jpg"), scene)
            lines.append(f"s{n}.jpg 0 20 10 90 100 0.9 {code}")
            lines.append(f"s{n}.jpg 1 100 200 280 180 0.8 6")
    lines += ["missing.jpg 0 1 1 50 50 0.9 3", "s1.jpg 0 20 10 90 100 0.9 7", "s1.jpg 0 20"]
    (root / "label" / "label.lst").write_text("\n".join(lines) + "\n")
    return root, faces_per_class


def test_expw_every_boxed_face_of_every_scene(tmp_path):
    root, per_class = expw(tmp_path / "expw")
    data = load_dataset({"kind": "auto", "path": str(root), "size": 48})
    totals = data.counts().sum(0)
    expected = list(per_class)
    expected[6] += sum(per_class)  # every scene's second face is neutral
    assert totals.tolist() == expected
    assert_pixels_match_labels(data)
    assert data.counts()[2].sum() > 0 and data.counts()[1].sum() > 0  # splits carved
    skipped = {k: v["count"] for k, v in data.problems.items()}
    assert skipped == {
        "label lines naming a missing image": 1,
        "unknown label codes (ExpW uses 0-6)": 1,
        "truncated or malformed label lines": 1,
    }


def test_a_published_layout_with_its_files_missing_says_which(tmp_path):
    root = tmp_path / "raf"
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 1\n")
    with pytest.raises(FerbenchError, match="Image/aligned/ is missing"):
        load_dataset({"kind": "rafdb", "path": str(root)})


def test_data_info_json_reports_the_counts(tmp_path):
    counts = {"surprise": (3, 1), "fear": (1, 1), "disgust": (2, 1), "happy": (6, 2),
              "sad": (2, 1), "angry": (1, 1), "neutral": (4, 2)}  # fmt: skip
    root = rafdb(tmp_path / "raf", counts)
    result = cli.invoke(app, ["data", "info", str(root), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["kind"] == "rafdb" and report["dataset"] == "RAF-DB (basic, aligned)"
    for name, (train, test) in counts.items():
        assert report["counts"]["train"][name] + report["counts"]["val"][name] == train
        assert report["counts"]["test"][name] == test
    assert report["skipped"]["label lines naming a missing image"]["count"] == 1
