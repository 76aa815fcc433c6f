from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import noise_faces
from typer.testing import CliRunner

from ferbench.cli import app
from ferbench.errors import FerbenchError
from ferbench.infer.detect import make_detector
from ferbench.infer.predictor import Predictor
from ferbench.models import create_model

runner = CliRunner()
CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def test_predictor_batches_any_crop(checkpoint):
    predictor = Predictor(checkpoint)
    crops = [np.zeros((48, 48), np.uint8), np.full((90, 70, 3), 128, np.uint8)]
    probs = predictor.predict(crops)
    assert probs.shape == (2, 7)
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert predictor.predict([]).shape == (0, 7)


def test_predictor_from_run_dir_and_quantized(checkpoint):
    plain, int8 = Predictor(checkpoint.parent), Predictor(checkpoint, quantize=True)
    crop = [np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)]
    assert np.abs(plain.predict(crop) - int8.predict(crop)).max() < 0.05


def test_wrong_checkpoints_say_why(tmp_path):
    import torch

    bare = tmp_path / "bare.pt"
    torch.save(create_model("cnn5").state_dict(), bare)
    with pytest.raises(FerbenchError, match="not a ferbench checkpoint"):
        Predictor(bare)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"garbage")
    with pytest.raises(FerbenchError, match="not a loadable PyTorch checkpoint"):
        Predictor(junk)
    with pytest.raises(FerbenchError, match="checkpoint not found"):
        Predictor(tmp_path / "none.pt")


def test_model_name_without_runs_explains(tmp_path):
    result = runner.invoke(
        app, ["predict", str(tmp_path), "--model", "cnn3", "--results", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "no finished run of 'cnn3'" in result.output and "ferbench run" in result.output


@pytest.mark.parametrize("kind", ["haar", "mtcnn"])
def test_detectors_find_the_astronaut_in_most_frames(astronaut_video, kind):
    path, frames = astronaut_video
    detector = make_detector(kind)
    capture = cv2.VideoCapture(str(path))
    found = false_boxes = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        boxes = detector(frame)
        found += bool(boxes)
        false_boxes += max(0, len(boxes) - 1)
    assert found >= 0.8 * frames
    if kind == "mtcnn":
        assert false_boxes == 0


def test_mtcnn_weights_are_shipped_checked_and_licensed():
    from ferbench.fileio import sha256_file
    from ferbench.infer import mtcnn

    assert sha256_file(mtcnn.WEIGHTS) == mtcnn.WEIGHTS_SHA256
    assert "MIT License" in (mtcnn.WEIGHTS.parent / "LICENSE-mtcnn.md").read_text()


def test_mtcnn_frames_faces_like_fer2013_and_scores_them():
    from skimage import data

    from ferbench.infer.mtcnn import MtcnnDetector

    photo = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    detector = MtcnnDetector()
    boxes = detector(photo)
    assert len(boxes) == 1 and detector.last_scores[0] > 0.9
    x, y, w, h = boxes[0]
    assert w == h and 150 < x + w / 2 < 260 and 60 < y + h / 2 < 160  # square, on her face
    assert detector(np.full((240, 320, 3), 127, np.uint8)) == []  # a blank frame: no face


def test_mtcnn_verify_reframes_a_drifted_box_and_drops_one_off_the_face():
    """A face the detector missed is re-checked by O-Net alone: a box that drifted is pulled
    back onto the face, a box that now shows background comes back None and is forgotten."""
    from skimage import data

    from ferbench.infer.mtcnn import MtcnnDetector
    from ferbench.infer.tracking import FaceTracker, iou

    photo = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    detector = MtcnnDetector()
    (face,) = detector(photo)
    drifted = (face[0] + face[2] // 5, face[1] - face[3] // 6, face[2], face[3])
    background = (380, 380, face[2], face[3])
    moved, gone = detector.verify(photo, [drifted, background])
    assert gone is None and iou(moved, face) > 0.8 > iou(drifted, face)
    assert detector.verify(photo, [(600, -200, 80, 80)]) == [None]  # carried off the frame
    tracker = FaceTracker()
    ids = tracker.update([drifted, background], frame=0)
    assert tracker.uncertain(frame=0) == ([], [])  # found on this very frame
    uncertain, boxes = tracker.uncertain(frame=1)  # seen once: their motion is a guess
    assert uncertain == ids and boxes == [drifted, background]
    tracker.refresh(uncertain, [moved, gone], frame=1)
    assert tracker.active(frame=1) == ([ids[0]], [moved])


def test_tracker_rechecks_only_the_boxes_that_are_guesses():
    from ferbench.infer.tracking import FaceTracker

    tracker = FaceTracker(coast=1)
    still, walker = tracker.update([(100, 100, 100, 100), (400, 100, 100, 100)], frame=0)
    tracker.update([(100, 100, 100, 100), (430, 100, 100, 100)], frame=5)  # walker: 6 px/frame
    assert tracker.uncertain(frame=6) == ([], [])  # carried 6 px: under 10% of its side
    assert tracker.uncertain(frame=7) == ([walker], [(442, 100, 100, 100)])  # 12 px
    tracker.update([(100, 100, 100, 100)], frame=10)  # the detector missed the walker
    assert tracker.uncertain(frame=10) == ([walker], [(460, 100, 100, 100)])
    assert still not in tracker.uncertain(frame=30)[0]  # standing still: never a guess
    tracker.update([(470, 100, 100, 100)], frame=11)  # a search finds the walker, not the other
    tracker.forget_unseen([still, walker], frame=11)
    assert tracker.active(frame=11)[0] == [walker]


def test_overlapped_live_loop_labels_exactly_what_the_sequential_one_does(
    tmp_path, checkpoint, astronaut_video
):
    import torch

    from ferbench.infer.live import run_live

    path, frames = astronaut_video
    predictor, logs = Predictor(checkpoint), {}
    threads = torch.get_num_threads()
    for overlap in (False, True):
        logs[overlap] = tmp_path / f"faces-{overlap}.csv"
        stats = run_live(
            predictor, str(path), make_detector("mtcnn"), show=False, log=logs[overlap],
            detect_every=5, overlap=overlap,
        )  # fmt: skip
        assert stats.frames == frames and stats.frames_with_face >= 0.8 * frames
    assert logs[True].read_text() == logs[False].read_text()
    assert torch.get_num_threads() == threads  # one thread per op only while overlapping


def test_run_ahead_hands_on_errors_and_stops_on_close():
    from ferbench.infer.ahead import RunAhead

    def failing():
        yield 1
        raise ValueError("bad frame")

    ahead = RunAhead(failing())
    assert next(ahead) == 1
    with pytest.raises(ValueError, match="bad frame"):
        next(ahead)
    produced = []

    def endless():
        while True:
            produced.append(len(produced))
            yield produced[-1]

    ahead = RunAhead(endless(), depth=2)
    assert [next(ahead) for _ in range(3)] == [0, 1, 2]
    ahead.close()
    assert not ahead._thread.is_alive() and len(produced) <= 3 + 2 + 1  # never ran away


def test_predict_finds_exactly_the_six_faces_of_the_group_photo(shared_data):
    photo = shared_data / "media" / "multiface.jpg"
    result = runner.invoke(app, ["predict", str(photo), "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 6


def test_live_headless_writes_video_and_log(tmp_path, checkpoint, astronaut_video):
    path, frames = astronaut_video
    out, log = tmp_path / "annotated.mp4", tmp_path / "faces.csv"
    result = runner.invoke(
        app,
        [
            "live",
            "--checkpoint",
            str(checkpoint),
            "--source",
            str(path),
            "--no-window",
            "--backend",
            "torch-int8",
            "--output",
            str(out),
            "--log",
            str(log),
            "--smooth",
            "0.5",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "frames/s" in result.output
    capture = cv2.VideoCapture(str(out))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == frames
    with open(log) as handle:
        rows = list(csv.DictReader(handle))
    assert {"frame", "time_s", "x", "y", "w", "h", "label", "probability", *CLASSES} <= set(rows[0])
    assert len({r["frame"] for r in rows}) >= 0.8 * frames
    assert all(abs(sum(float(r[c]) for c in CLASSES) - 1) < 1e-3 for r in rows)


def test_live_without_display_says_so(checkpoint, astronaut_video, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = runner.invoke(
        app, ["live", "--checkpoint", str(checkpoint), "--source", str(astronaut_video[0])]
    )
    assert result.exit_code == 1 and "--no-window" in result.output


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


@pytest.mark.slow
def test_crowd_clip_and_group_photo(tmp_path, checkpoint, shared_data):
    media = shared_data / "media"
    result = runner.invoke(
        app,
        [
            "live",
            "--checkpoint",
            str(checkpoint),
            "--source",
            str(media / "crowd_1080p.mp4"),
            "--no-window",
            "--backend",
            "torch-int8",
            "--output",
            str(tmp_path / "out.mp4"),
            "--log",
            str(tmp_path / "log.csv"),
        ],
    )
    assert result.exit_code == 0, result.output
    with open(tmp_path / "log.csv") as handle:
        frames_with_faces = {row["frame"] for row in csv.DictReader(handle)}
    assert len(frames_with_faces) == 105
    photo = runner.invoke(
        app, ["predict", str(media / "multiface.jpg"), "--checkpoint", str(checkpoint), "--json"]
    )
    assert photo.exit_code == 0 and len(json.loads(photo.stdout[photo.stdout.index("[") :])) >= 5


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


def test_score_matches_found_boxes_to_the_truth():
    import pandas as pd

    from ferbench.bench.labelled_video import score

    truth = pd.DataFrame(
        [
            [0, 0, 10, 10, 100, 100, "happy"],
            [0, 1, 300, 10, 100, 100, "sad"],
            [1, 0, 12, 10, 100, 100, "happy"],
        ],
        columns=["frame", "face", "x", "y", "w", "h", "label"],
    )
    found = pd.DataFrame(
        [
            [0, 15, 12, 95, 95, "happy"],
            [0, 500, 200, 80, 80, "angry"],
            [1, 300, 10, 100, 100, "happy"],
        ],
        columns=["frame", "x", "y", "w", "h", "label"],
    )
    result = score(found, truth)
    assert result["recall"] == pytest.approx(1 / 3) and result["precision"] == pytest.approx(1 / 3)
    assert result["false_boxes"] == 2 and result["end_to_end_accuracy"] == pytest.approx(1 / 3)


def test_on_face_matching_accepts_a_face_framed_box_and_refuses_a_box_between_faces():
    """A detector's box tight on a face inside a loosely framed crop (IoU 0.3) is on that face;
    a box straddling two faces, or on the neighbour, is not."""
    import pandas as pd

    from ferbench.bench.labelled_video import on_face, score_both

    crop = (100, 100, 120, 120)
    tight = (130, 125, 66, 66)  # the face inside a zoomed-out crop
    assert on_face(tight, crop) and not on_face((190, 100, 120, 120), crop)
    assert not on_face((300, 100, 60, 60), crop)
    truth = pd.DataFrame(
        [[0, 0, *crop, "happy"], [0, 1, 240, 100, 120, 120, "sad"]],
        columns=["frame", "face", "x", "y", "w", "h", "label"],
    )
    found = pd.DataFrame(
        [[0, *tight, "happy"], [0, 170, 100, 120, 120, "sad"]],
        columns=["frame", "x", "y", "w", "h", "label"],
    )
    result = score_both(found, truth)
    assert result["recall"] == 0 and result["end_to_end_accuracy"] == 0
    assert result["recall_on_face"] == pytest.approx(0.5)
    assert result["end_to_end_accuracy_on_face"] == pytest.approx(0.5)
    assert result["false_boxes_on_face"] == 1


def test_labelled_video_scores_every_loop_against_the_ceiling(tmp_path):
    import pandas as pd

    clip = tmp_path / "bench.mp4"
    made = runner.invoke(app, ["data", "video", str(clip), "--frames", "36", "--seed", "1"])
    assert made.exit_code == 0, made.output
    truth = pd.read_csv(tmp_path / "bench.csv")
    assert (
        set(truth.columns) >= {"frame", "x", "y", "w", "h", "label"} and truth["frame"].max() == 35
    )
    out = tmp_path / "live.csv"
    result = runner.invoke(
        app,
        ["bench", "--video", str(clip), "--truth", str(tmp_path / "bench.csv"), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out)
    assert rows["loop"].iloc[0].startswith("reference") and rows["loop"].iloc[-1].startswith(
        "ceiling"
    )
    loops = rows.iloc[:-1]
    assert (loops["recall"].between(0, 1)).all() and (loops["fps"] > 0).all()
    assert (loops["end_to_end_accuracy"] <= loops["recall"] + 1e-9).all()
    assert (loops["end_to_end_accuracy_on_face"] >= loops["end_to_end_accuracy"]).all()


def test_tracker_follows_a_moving_face_and_forgets_on_a_cut():
    from ferbench.infer.tracking import FaceTracker

    tracker = FaceTracker(coast=1)
    # a face walking right 35 px a frame, detected every third frame (a face width per round)
    first = tracker.update([(100, 50, 110, 110)], frame=0)
    second = tracker.update([(205, 52, 110, 110)], frame=3)
    assert first == second  # same person despite no overlap
    ids, boxes = tracker.active(frame=4)
    assert boxes[0][0] == 240  # the box follows the face between detections
    third = tracker.update([(310, 54, 110, 110), (600, 50, 100, 100)], frame=6)
    assert third[0] == first[0] and third[1] != first[0]
    tracker.reset()
    assert tracker.update([(310, 54, 110, 110)], frame=7)[0] not in third


def test_live_summary_writes_per_person_timelines(tmp_path, checkpoint, astronaut_video):
    import pandas as pd

    path, frames = astronaut_video
    out = tmp_path / "timelines"
    result = runner.invoke(
        app,
        ["live", "--checkpoint", str(checkpoint), "--source", str(path), "--no-window",
         "--summary", str(out), "--backend", "torch"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    people = pd.read_csv(out / "people.csv")
    assert len(people) == 1 and people["frames"].iloc[0] >= 0.8 * frames
    shares = people.filter(like="share_").iloc[0]
    assert abs(shares.sum() - 1) < 1e-3 and people["dominant"].iloc[0] in CLASSES
    person = people["person"].iloc[0]
    assert (out / f"person_{person}.png").stat().st_size > 5000
    assert len(pd.read_csv(out / f"person_{person}.csv")) == people["frames"].iloc[0]


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
