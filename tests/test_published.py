"""RAF-DB, AffectNet, ExpW, CK+ and JAFFE read in their published layouts, with their own codes.

Each fixture paints every face with a grey level that encodes its true class, and gives the
classes unequal counts, so a wrong code map shows in the counts and in the pixels.  CK+ and JAFFE
are whole photos where the detector finds the face: there each class's face has its own
brightness, so a wrong map shows in the crops' order of brightness."""

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
    with pytest.raises(FerbenchError, match=r"Image/aligned/ \(or Image/original/\) is missing"):
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


CKPLUS_CODES = ["neutral", "angry", "contempt", "disgust", "fear", "happy", "sad", "surprise"]


def portrait(brightness: float, shape: tuple[int, int], shift: int = 0) -> np.ndarray:
    """A grey photo with the scikit-image astronaut's face (public domain) at a brightness."""
    from skimage import data

    face = cv2.cvtColor(data.astronaut()[20:220, 120:300], cv2.COLOR_RGB2GRAY)
    photo = np.full(shape, 60, np.uint8)
    top, left = (shape[0] - 200) // 2, (shape[1] - 180) // 2 + shift
    photo[top : top + 200, left : left + 180] = np.clip(face * brightness, 0, 255)
    return photo


def brightness(name: str, classes: list[str]) -> float:
    return 0.6 + 0.07 * classes.index(name)


def assert_brightness_follows_labels(data, n_classes: int):
    """The mean crop of each class is brighter than the one of the class before it."""
    means = [data.images[data.labels == c].mean() for c in range(n_classes) if c in data.labels]
    assert means == sorted(means), means


def ckplus(root, sequences: dict[str, int]):
    """`sequences[name]` labelled sequences of 5 frames per CK+ emotion, over 6 subjects, and
    three bad ones: no Emotion file, an unknown code, a last frame without a face."""
    classes = [*FER2013_CLASSES, "contempt"]
    n = 0
    for name, count in sequences.items():
        code = CKPLUS_CODES.index(name)
        for _ in range(count):
            n += 1
            subject, sequence = f"S{100 + n % 6:03d}", f"{n:03d}"
            folder = root / "cohn-kanade-images" / subject / sequence
            folder.mkdir(parents=True)
            for frame in range(1, 6):
                picture = portrait(brightness(name, classes), (490, 640), 4 * frame)
                if frame == 1:
                    picture = portrait(brightness("neutral", classes), (490, 640))
                cv2.imwrite(str(folder / f"{subject}_{sequence}_{frame:08d}.png"), picture)
            emotion = root / "Emotion" / subject / sequence
            emotion.mkdir(parents=True)
            (emotion / f"{subject}_{sequence}_00000005_emotion.txt").write_text(f"   {code:.7e}\n")
    for sequence, label in (("901", None), ("902", "9.0000000e+00"), ("903", "5.0")):
        folder = root / "cohn-kanade-images" / "S999" / sequence
        folder.mkdir(parents=True)
        for frame in range(1, 6):
            picture = portrait(1.0, (490, 640))
            if sequence == "903" and frame == 5:
                picture = np.full((490, 640), 60, np.uint8)  # the face left the frame
            cv2.imwrite(str(folder / f"S999_{sequence}_{frame:08d}.png"), picture)
        if label is not None:
            (root / "Emotion" / "S999" / sequence).mkdir(parents=True)
            (root / "Emotion" / "S999" / sequence / "x_emotion.txt").write_text(label)
    return root


def test_ckplus_last_frames_codes_faces_and_subject_folds(tmp_path):
    sequences = {"angry": 1, "contempt": 1, "disgust": 2, "fear": 1, "happy": 3, "sad": 1,
                 "surprise": 2}  # fmt: skip
    root = ckplus(tmp_path / "ck", sequences)
    data = load_dataset({"kind": "auto", "path": str(root), "size": 48})
    assert data.dataset == "CK+" and data.class_names[-1] == "contempt"
    assert data.images.shape[1:] == (48, 48)
    totals = dict(zip(data.class_names, data.counts().sum(0).tolist()))
    expected = {name: 3 * sequences.get(name, 0) for name in data.class_names}
    expected["happy"] += 2  # S999/903: two of its last three frames show a face
    assert totals == expected
    assert (data.splits == 2).all()  # no folds: every labelled frame is for eval
    assert_brightness_follows_labels(data, len(data.class_names))
    skipped = {k: v["count"] for k, v in data.problems.items()}
    assert skipped == {
        "sequences without an Emotion file (left out)": 1,
        "unknown emotion codes (CK+ uses 0-7)": 1,
        "images without a face found": 1,
    }
    with_neutral = load_dataset({"kind": "ckplus", "path": str(root), "neutral": "first"})
    assert with_neutral.counts().sum(0)[data.class_names.index("neutral")] == 12

    folded = load_dataset({"kind": "ckplus", "path": str(root), "folds": 3, "fold": 1})
    subjects = [set(folded.extras["subject"][folded.splits == s].tolist()) for s in range(3)]
    assert all(subjects) and not (subjects[0] & subjects[2]) and not (subjects[1] & subjects[2])
    assert not (subjects[0] & subjects[1])
    with pytest.raises(FerbenchError, match="data.fold must be between 0 and 2"):
        load_dataset({"kind": "ckplus", "path": str(root), "folds": 3, "fold": 3})


def test_jaffe_names_faces_and_bad_files(tmp_path):
    root = tmp_path / "jaffe"
    root.mkdir()
    counts = {"AN": 2, "DI": 1, "FE": 3, "HA": 2, "NE": 1, "SA": 2, "SU": 1}
    names = {"AN": "angry", "DI": "disgust", "FE": "fear", "HA": "happy", "NE": "neutral",
             "SA": "sad", "SU": "surprise"}  # fmt: skip
    n = 0
    for code, count in counts.items():
        for i in range(count):
            n += 1
            subject = ["KA", "KL", "KM", "KR"][n % 4]
            picture = portrait(brightness(names[code], FER2013_CLASSES), (256, 256))
            cv2.imwrite(str(root / f"{subject}.{code}{i + 1}.{n}.tiff"), picture)
    # Too blurred, then too flat, for the photo thresholds: the second look keeps them.
    happy = portrait(brightness("happy", FER2013_CLASSES), (256, 256)).astype(np.float32)
    cv2.imwrite(str(root / "KA.HA3.97.tiff"), cv2.GaussianBlur(happy, (0, 0), 6).astype(np.uint8))
    flat = happy.mean() + (happy - happy.mean()) / 6
    cv2.imwrite(str(root / "KL.HA4.96.tiff"), flat.astype(np.uint8))
    counts["HA"] += 2
    cv2.imwrite(str(root / "KA.XX1.99.tiff"), portrait(1.0, (256, 256)))  # unknown class
    (root / "KA.HA9.98.tiff").write_bytes(b"II*\x00 not really a tiff")  # corrupt
    (root / "README").write_text("The Japanese Female Facial Expression database")
    data = load_dataset({"kind": "auto", "path": str(root), "size": 48})
    assert data.dataset == "JAFFE" and data.class_names == FER2013_CLASSES
    totals = dict(zip(data.class_names, data.counts().sum(0).tolist()))
    assert totals == {names[code]: count for code, count in counts.items()}
    assert_brightness_follows_labels(data, 7)
    skipped = {k: v["count"] for k, v in data.problems.items()}
    assert skipped == {
        "unknown class letters (JAFFE: AN DI FE HA NE SA SU)": 1,
        "files skipped: unreadable or corrupt": 1,
    }
    assert any(note.startswith("2 faces found on a second look") for note in data.notes)
    folded = load_dataset({"kind": "jaffe", "path": str(root), "folds": 4, "fold": 0})
    assert len(set(folded.extras["subject"][folded.splits == 2].tolist())) == 1
    with pytest.raises(FerbenchError, match="data.folds: .* no subjects"):
        load_dataset({"kind": "rafdb", "path": str(rafdb(tmp_path / "raf", {"sad": (2, 1)})),
                      "folds": 2})  # fmt: skip


def test_rafdb_original_photos_go_through_the_detector(tmp_path):
    root = tmp_path / "raf"
    (root / "EmoLabel").mkdir(parents=True)
    (root / "Image" / "original").mkdir(parents=True)
    codes = {"surprise": 1, "happy": 4, "neutral": 7}
    lines = []
    for n, (name, split) in enumerate([("surprise", "train"), ("happy", "train"),
                                       ("happy", "test"), ("neutral", "train")]):  # fmt: skip
        photo = portrait(brightness(name, FER2013_CLASSES), (300, 400), 10 * n)
        cv2.imwrite(str(root / "Image" / "original" / f"{split}_{n:05d}.jpg"), photo)
        lines.append(f"{split}_{n:05d}.jpg {codes[name]}")
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    data = load_dataset({"kind": "auto", "path": str(root), "size": 48, "val_fraction": 0})
    assert data.counts().sum(0).tolist() == [0, 0, 0, 2, 0, 1, 1]
    assert data.counts()[2].sum() == 1
    assert_brightness_follows_labels(data, 7)
