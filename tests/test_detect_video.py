"""Face detectors on video frames and group photos: MTCNN and Haar, framing, re-checks."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from ferbench.cli import app
from ferbench.faces.detect import make_detector

runner = CliRunner()


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
    from ferbench.faces import mtcnn
    from ferbench.utils.fileio import sha256_file

    assert sha256_file(mtcnn.WEIGHTS) == mtcnn.WEIGHTS_SHA256
    assert "MIT License" in (mtcnn.WEIGHTS.parent / "LICENSE-mtcnn.md").read_text()


def test_mtcnn_frames_faces_like_fer2013_and_scores_them():
    from skimage import data

    from ferbench.faces.mtcnn import MtcnnDetector

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

    from ferbench.faces.mtcnn import MtcnnDetector
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


def test_predict_finds_exactly_the_six_faces_of_the_group_photo(shared_data):
    photo = shared_data / "media" / "multiface.jpg"
    result = runner.invoke(app, ["predict", str(photo), "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 6
