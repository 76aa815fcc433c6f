"""The live loop: tracking, overlapped stages, headless output, timelines."""

from __future__ import annotations

import csv
import json

import cv2
import pytest
from typer.testing import CliRunner

from ferbench.cli import app
from ferbench.faces.detect import make_detector
from ferbench.infer.predictor import Predictor

runner = CliRunner()
CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


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
