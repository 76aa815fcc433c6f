"""The labelled-video benchmark: matching found boxes to the truth and scoring live loops."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ferbench.cli import app

runner = CliRunner()


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
    truth_text = (tmp_path / "bench.csv").read_text()
    scored = ["bench", "--video", str(clip), "--truth", str(tmp_path / "bench.csv")]
    result = runner.invoke(app, scored)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "bench.csv").read_text() == truth_text  # the figures go beside it
    rows = pd.read_csv(tmp_path / "bench-live.csv")
    refused = runner.invoke(app, [*scored, "--out", str(tmp_path / "bench.csv")])
    assert (
        refused.exit_code == 1 and "is an input of this benchmark; name another" in refused.output
    )
    assert rows["loop"].iloc[0].startswith("reference") and rows["loop"].iloc[-1].startswith(
        "ceiling"
    )
    loops = rows.iloc[:-1]
    assert (loops["recall"].between(0, 1)).all() and (loops["fps"] > 0).all()
    assert (loops["end_to_end_accuracy"] <= loops["recall"] + 1e-9).all()
    assert (loops["end_to_end_accuracy_on_face"] >= loops["end_to_end_accuracy"]).all()
